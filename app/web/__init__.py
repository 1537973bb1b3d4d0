"""Browser pages: sign-in and consent (and, later, the dashboard)."""
