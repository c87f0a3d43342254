"""The demo: a realistic synthetic month run end to end on SQLite."""
