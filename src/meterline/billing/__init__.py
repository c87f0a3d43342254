"""Billing: customers, periods, invoice assembly and documents (pure domain)."""
