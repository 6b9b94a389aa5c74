"""Local stand-ins for the providers, and the store of everything they received (/sandbox)."""
