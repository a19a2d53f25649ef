"""The application layer: the only caller of the store; authorisation and site scoping live here."""
