"""The emulated Microsoft identity platform: a one-click consent page and the token endpoint (docs/microsoft-api.md#oauth).

Authorize answers like login.microsoftonline.com: problems it cannot report to the app (no or
unknown client_id, a redirect_uri that is missing or not registered for the app) are shown on
the page; every other outcome goes back to the redirect_uri as `code`+`state` or
`error`+`error_description`+`state` (response_mode=query).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from emulator import behaviour, tokens
from emulator.http import require_enabled
from emulator.models import EmulatorUser
from emulator.urltools import add_query

AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "prompt", "code_challenge",
                    "code_challenge_method", "response_mode")


def _page_problem(params: dict) -> str:
    """Errors Microsoft shows on its own page, because it cannot trust where to redirect."""
    if not params["client_id"]:
        return "AADSTS900144: The request body must contain the following parameter: 'client_id'."
    if tokens.client_secret_for(params["client_id"]) is None:
        return f"AADSTS700016: {tokens.unknown_client(params['client_id']).text}"
    if not tokens.redirect_uri_registered(params["client_id"], params["redirect_uri"]):
        # Never redirect to an unregistered URI: that is how codes would leak to an attacker's site.
        # https://learn.microsoft.com/en-us/entra/identity-platform/reply-url
        return (f"AADSTS50011: The redirect URI '{params['redirect_uri']}' specified in the request does not match "
                f"the redirect URIs configured for the application '{params['client_id']}'. Make sure the "
                "redirect URI sent in the request matches one added to your application in the Azure portal. "
                "Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this.")
    return ""


def _redirect_problem(params: dict) -> tuple[str, str] | None:
    """Errors sent back to the app as error + error_description."""
    if params["response_type"] != "code":
        return "unsupported_response_type", f"AADSTS700054: response_type '{params['response_type']}' is not enabled."
    if not params["scope"]:
        return "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'."
    if params["code_challenge"] and params["code_challenge_method"] not in ("", "S256", "plain"):
        return "invalid_request", "AADSTS501491: Invalid code_challenge_method: use S256 or plain."
    if params["prompt"] == "none":
        return "interaction_required", "AADSTS50058: A silent sign-in request was sent but no user is signed in."
    return None


def _back_to_app(params: dict, answer: dict) -> HttpResponseRedirect:
    if params["state"]:
        answer["state"] = params["state"]
    return HttpResponseRedirect(add_query(params["redirect_uri"], answer))


@csrf_exempt
def authorize(request: HttpRequest) -> HttpResponse:
    require_enabled()
    source = request.POST if request.method == "POST" else request.GET
    params = {name: source.get(name, "") for name in AUTHORIZE_PARAMS}
    problem = _page_problem(params)
    if problem:
        return render(request, "emulator/authorize.html", {"problem": problem}, status=400)
    redirect_problem = _redirect_problem(params)
    if redirect_problem:
        return _back_to_app(params, {"error": redirect_problem[0], "error_description": redirect_problem[1]})
    if request.method == "POST":
        return _decide(request, params)
    return _consent_page(request, params)


def _consent_page(request: HttpRequest, params: dict, problem: str = "") -> HttpResponse:
    context = {"params": params, "scopes": params["scope"].split(), "users": EmulatorUser.objects.all(),
               "problem": problem}
    return render(request, "emulator/authorize.html", context, status=400 if problem else 200)


def _decide(request: HttpRequest, params: dict) -> HttpResponse:
    """Accept issues a code for the picked user; Cancel is the user declining consent."""
    if request.POST.get("decision") != "accept":
        return _back_to_app(params, {"error": "access_denied",
                                     "error_description": "AADSTS65004: User declined to consent to access the app."})
    user = EmulatorUser.objects.filter(user_id=request.POST.get("user", "")).first()
    if user is None:
        return _consent_page(request, params, "Pick a user to sign in as.")
    code = tokens.issue_code(user, params["client_id"], params["scope"], params["redirect_uri"],
                             params["code_challenge"], params["code_challenge_method"])
    return _back_to_app(params, {"code": code.value})


def _token_json(payload: dict, status: int = 200) -> JsonResponse:
    response = JsonResponse(payload, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


@csrf_exempt
def token(request: HttpRequest) -> HttpResponse:
    """POST form-encoded: grant_type authorization_code or refresh_token."""
    require_enabled()
    if request.method != "POST":
        return _token_json({"error": "invalid_request", "error_description": "Use POST."}, 405)
    if behaviour.token_endpoint_fails():
        err = tokens.TokenError("temporarily_unavailable", 90033, "A transient error has occurred. Please try again.",
                                status=503)
        return _token_json(err.body(), err.status)
    try:
        return _token_json(_grant(request))
    except tokens.TokenError as err:
        return _token_json(err.body(), err.status)


def _grant(request: HttpRequest) -> dict:
    basic_id, basic_secret = tokens.basic_credentials(request.headers.get("Authorization", ""))
    client_id = request.POST.get("client_id") or basic_id
    tokens.check_client(client_id, request.POST.get("client_secret") or basic_secret)
    grant_type = request.POST.get("grant_type", "")
    if grant_type == "authorization_code":
        return tokens.redeem_code(request.POST, client_id)
    if grant_type == "refresh_token":
        return tokens.redeem_refresh_token(request.POST, client_id)
    if not grant_type:
        raise tokens.missing("grant_type")
    raise tokens.TokenError("unsupported_grant_type", 70003,
                            f"The app requested an unsupported grant type '{grant_type}'.")
