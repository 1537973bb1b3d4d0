"""OAuth 2.0 on Authlib: the only package that imports ``authlib.oauth2``."""
