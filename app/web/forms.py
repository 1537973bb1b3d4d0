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


class ClientForm(FlaskForm):
    name = StringField("Application name", validators=[DataRequired(), Length(max=200)])
    redirect_uris = TextAreaField("Redirect URIs (one per line; leave empty for client credentials only)")
    client_type = RadioField("Client type", choices=[("confidential", "Confidential (has a secret)"),
                                                     ("public", "Public (no secret, PKCE)")], default="confidential")
    scopes = ScopeField("Allowed scopes")


class ServiceAccountForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField("Description (optional)", validators=[Length(max=1000)])
    scopes = ScopeField()
    ip_whitelist = TextAreaField("IP allow-list (optional, one address or CIDR range per line)")


class ServiceAccountYamlForm(FlaskForm):
    file = FileField("service-account.yaml", validators=[FileRequired(), FileAllowed(["yaml", "yml"], "A .yaml file")])


class MemberForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    role = SelectField("Role", choices=[(r, r.capitalize()) for r in ROLES], default="developer")
    password = PasswordField("Initial password (12+ characters)", validators=[DataRequired(), Length(max=1024)])


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
