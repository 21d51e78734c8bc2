"""Domain types: enums, value types and errors. No I/O lives here."""
