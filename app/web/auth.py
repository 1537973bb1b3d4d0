"""Sign in and sign out (SPEC §5)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from app.services import orgs as org_service
from app.web.forms import ConfirmForm, LoginForm
from app.web.session import current_user, safe_next, sign_in, sign_out

bp = Blueprint("auth", __name__)

INVALID_CREDENTIALS = "Invalid email or password."


@bp.get("/")
def home():
    user = current_user()
    if user is None:
        return redirect(url_for("auth.login"))
    org = org_service.get_org(user.org_id)
    return render_template("home.html", user=user, org=org, form=ConfirmForm())


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next"))
        return render_template("login.html", form=form)
    if not form.validate_on_submit():
        return render_template("login.html", form=form, error=_form_error(form)), 400
    user = org_service.authenticate_user(email=form.email.data or "", password=form.password.data or "")
    if user is None:
        return render_template("login.html", form=form, error=INVALID_CREDENTIALS), 401
    sign_in(user)
    return redirect(safe_next(form.next.data), code=303)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        sign_out()
        return redirect(url_for("auth.login"), code=303)
    if request.method == "POST":
        return render_template("logout.html", form=form, error="The form expired; try again."), 400
    return render_template("logout.html", form=form)


def _form_error(form: LoginForm) -> str:
    if "csrf_token" in form.errors:
        return "The form expired; reload the page and try again."
    return INVALID_CREDENTIALS
