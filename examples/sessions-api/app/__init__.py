"""sessions-api: the demo service Gatekeeper validates builder fixes against."""
