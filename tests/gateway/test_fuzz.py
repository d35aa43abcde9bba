"""Whatever arrives in the headers of the cron endpoint: a clean 401 (or 200 for the secret), never a 500."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import CRON_SECRET

PATH = "/api/cron/run-bots"

header_bytes = st.binary(min_size=1, max_size=2048).filter(
    lambda raw: all(byte >= 0x20 and byte != 0x7F for byte in raw) and raw == raw.strip()
)
near_misses = st.builds(
    lambda prefix, secret, suffix: f"{prefix}{secret}{suffix}".strip().encode("latin-1"),
    st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Bearer\t", "Basic ", "", "Token "]),
    st.sampled_from([CRON_SECRET, CRON_SECRET[:-1], CRON_SECRET.upper(), CRON_SECRET + "=", ""]),
    st.text(alphabet="xé= ", max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(authorization=st.one_of(header_bytes, near_misses), method=st.sampled_from(["GET", "POST"]))
async def test_any_authorization_header_gets_a_clean_answer(gateway, authorization, method):
    response = await gateway.http.request(
        method, PATH, headers=[(b"authorization", authorization), (b"upstash-signature", authorization)]
    )
    # RFC 7235: the scheme is case-insensitive, then one or more spaces, then the token itself.
    accepted = authorization[:7].lower() == b"bearer " and authorization[7:].strip(b" ") == CRON_SECRET.encode()
    if accepted:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert response.json() == {"success": False, "error": "Unauthorized"}
