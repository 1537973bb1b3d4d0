import re
import requests
from tests.factories import bearer, make_api_key, make_org, make_user, make_client, Browser

TOK = re.compile(r'name="(?:[a-z]+-)?csrf_token" type="hidden" value="([^"]+)"')

def test_probe(live):
    org = make_org()
    row, admin = make_api_key(org)
    user = make_user(org)
    client = make_client(org)
    b = Browser(live.url)
    b.login(user.email)
    tok = TOK.search(b.http.get(f"{live.url}/dashboard/api-keys/new").text).group(1)
    for path in ("/dashboard/apps/%00x/rotate", "/dashboard/apps/%00x/delete", "/dashboard/members/%00/remove", "/dashboard/members/%00/role", f"/dashboard/authorized-apps/{client.client_id}%00/revoke", "/dashboard/service-accounts/sa_%00/edit", "/dashboard/service-accounts/sa_%00/delete", "/dashboard/api-keys/key_%00/revoke", "/dashboard/api-keys/key_%00/edit"):
        r = b.http.post(live.url + path, data={"csrf_token": tok, "role": "viewer", "name": "x"}, allow_redirects=False)
        print(path, r.status_code)
