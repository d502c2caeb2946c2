"""items-api: users log in with a password and keep a list of items."""
