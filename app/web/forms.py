"""Flask-WTF forms: every one carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import (
    DateField,
    EmailField,
    HiddenField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from app.models import ROLES
from app.services import scopes as scope_rules


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class ConfirmForm(FlaskForm):
    """A form with only the CSRF token: consent decisions, sign-out."""


# -- dashboard -----------------------------------------------------------------------------




class ScopeField(SelectMultipleField):
    """One checkbox per catalogue scope; templates group them by resource."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def __init__(self, label: str = "Permissions", **kwargs) -> None:
        super().__init__(label, choices=[(s, s) for s in scope_rules.CATALOGUE], **kwargs)


def lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class ApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    environment = RadioField("Key type", choices=[("live", "Live"), ("test", "Test")], default="live")
    scopes = ScopeField()
    expires_at = DateField("Expires on (optional)", validators=[Optional()])
    ip_whitelist = TextAreaField("IP allow-list (optional, one address or CIDR range per line)")


class ApiKeyEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    expires_at = DateField("Expires on (optional)", validators=[Optional()])
    ip_whitelist = TextAreaField("IP allow-list (one address or CIDR range per line)")


class Checkboxes(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


GRANT_CHOICES = [
    ("authorization_code", "Authorization code (people sign in and approve; needs a redirect URI)"),
    ("refresh_token", "Refresh tokens"),
    ("client_credentials", "Client credentials (the app acts as itself; confidential only)"),
    ("device_code", "Device code (command-line tools and TVs: the person approves at /device)"),
]


class ClientForm(FlaskForm):
    name = StringField("Application name", validators=[DataRequired(), Length(max=200)])
    redirect_uris = TextAreaField("Redirect URIs (one per line; leave empty for client credentials only)")
    client_type = RadioField("Client type", choices=[("confidential", "Confidential (has a secret)"),
                                                     ("public", "Public (no secret, PKCE)")], default="confidential")
    grant_types = Checkboxes("Grant types (none checked: authorization code and refresh tokens with redirect "
                             "URIs, plus client credentials for a confidential app)", choices=GRANT_CHOICES)
    sign_in_scopes = Checkboxes("Sign-in scopes (OpenID Connect)",
                                choices=[(s, f"{s} — {d}") for s, d in scope_rules.PROTOCOL.items()])
    scopes = ScopeField("Allowed scopes")
    post_logout_redirect_uris = TextAreaField("Post-logout redirect URIs (optional, one per line: where "
                                              "OpenID Connect logout may return; the redirect URIs count too)")


class ServiceAccountForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField("Description (optional)", validators=[Length(max=1000)])
    scopes = ScopeField()
    ip_whitelist = TextAreaField("IP allow-list (optional, one address or CIDR range per line)")


class ServiceAccountYamlForm(FlaskForm):
    file = FileField("service-account.yaml", validators=[FileRequired(), FileAllowed(["yaml", "yml"], "A .yaml file")])


class MemberForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices=[(r, r.capitalize()) for r in ROLES], default="developer")
    password = PasswordField("Initial password (12+ characters)", validators=[DataRequired(), Length(max=1024)])


class ProfileForm(FlaskForm):
    name = StringField("Display name (what apps you sign in to see with the profile scope)",
                       validators=[Optional(), Length(max=200)])


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=[(r, r.capitalize()) for r in ROLES])


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    action = StringField("Action", validators=[Optional(), Length(max=64)])
    actor_id = StringField("Actor id", validators=[Optional(), Length(max=64)])
    result = SelectField("Result", choices=[("", "Any"), ("success", "Success"), ("failure", "Failure")], default="")
    since = DateField("From", validators=[Optional()])
    until = DateField("To", validators=[Optional()])
