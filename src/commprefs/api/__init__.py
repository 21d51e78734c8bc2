"""HTTP adapters: translate wire shapes to service calls and back; no rules, no SQL."""
