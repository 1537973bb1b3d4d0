"""The domain: plain functions that own the rules and the transaction; no flask.request."""
