"""meterline: usage-based metering and invoicing whose numbers can be proved."""

__version__ = "0.1.0"
