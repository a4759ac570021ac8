"""Interoperability: fediverse-pasture (0.2.25, by helge; nobody here wrote it) checks our actors
and our HTTP signatures, against the six apps served for real by Hypercorn on loopback.

- verify-actor: for every app's actor and the instance actor, pasture resolves WebFinger, fetches
  the actor unsigned and signed, POSTs to its inbox unsigned (must be refused) and signed Likes
  from six actors of its own (must be accepted). Three of them (claire, frank) only show their
  public key to a signed GET: our inbox can verify their Likes only if our key fetches are signed.
  Each app's result must be what pasture's UI shows without a warning.
- http-signature: pasture's checker verifies a GET and a POST that we sign (draft-cavage,
  rsa-sha256), fetching our key by its key id.

pasture runs in a venv of its own (tests/interop/pasture/.venv, installed on demand from
pasture/requirements.txt) through pasture/serve.py, which serves its apps on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from shared.config import APP_NAMES
from shared.infrastructure.activitypub import urls
from shared.infrastructure.activitypub.remote import (
    RemoteClient,
    RemoteFetchError,
    Signer,
    get_actor_signer,
    get_instance_signer,
)
from tests.conftest import asyncpg_url
from tests.interop.activitypub_support import (
    PASTURE_DIR,
    Platform,
    Processes,
    free_port,
    http_client,
    interop_database,
    pasture_python,
    serving_platform,
    wait_until_answering,
)

ACTORS = urls.ACTOR_NAMES  # the six apps' actors and the instance actor
VERIFY_TIMEOUT = 10.0  # pasture's timeout per request while verifying
VERIFY_ALL_TIMEOUT = 120.0  # every actor verified (concurrently)

# What pasture's verify-actor UI shows without a warning (fediverse_pasture/verify_actor.py):
# alice and dean POST unsigned (must be refused), the others POST a signed Like (must be
# accepted); claire and frank answer only signed GETs of their actor (so our key fetch must be
# signed); dean, emily and frank have no WebFinger name (so we must fetch their key by its id).
GREEN = {
    "alice": {"get_actor": True, "post_inbox": False},
    "bob": {"get_actor": True, "post_inbox": True},
    "claire": {"get_actor": True, "post_inbox": True},
    "dean": {"get_actor": True, "post_inbox": False},
    "emily": {"get_actor": True, "post_inbox": True},
    "frank": {"get_actor": True, "post_inbox": True},
    "webfinger": True,
}
UNSIGNED = ("alice", "dean")
SIGNED = ("bob", "claire", "emily", "frank")
SIGNED_KEY_FETCH_ONLY = ("claire", "frank")


@dataclass(frozen=True)
class Pasture:
    verify_actor: str  # base URL of the verify-actor app (127.0.0.1)
    domain: str  # host:port of pasture's own actors (alice, bob, ...)
    http_signature: str  # base URL of the http-signature checker (a *.localhost name)
    processes: Processes


@pytest.fixture(scope="module")
async def platform(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    async with (
        interop_database(request, "ap_pasture") as database_url,
        serving_platform(
            apps=APP_NAMES,
            database_url=database_url,
            redis_url=redis_url,
            directory=tmp_path_factory.mktemp("ap-pasture-platform"),
        ) as served,
    ):
        yield served


@pytest.fixture(scope="module")
async def pasture_venv() -> Path:
    """The pasture venv's Python (installed on demand)."""
    return await asyncio.to_thread(pasture_python)


@pytest.fixture(scope="module")
async def pasture(
    pasture_venv: Path, platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pasture]:
    python = pasture_venv
    directory = tmp_path_factory.mktemp("ap-pasture")
    processes = Processes(directory)
    verify_port, signature_port = free_port(), free_port()
    domain = f"pasture.localhost:{verify_port}"
    serve = str(PASTURE_DIR / "serve.py")
    workdir = directory / "verify-actor"  # where pasture keeps data.toml (its actors' keys)
    workdir.mkdir()
    try:
        processes.start(
            "verify-actor",
            [
                str(python),
                serve,
                "verify-actor",
                "--port",
                str(verify_port),
                "--domain",
                domain,
                "--timeout",
                str(VERIFY_TIMEOUT),
            ],
            env={"PATH": "/usr/bin:/bin"},
            cwd=workdir,
        )
        processes.start(
            "http-signature",
            [str(python), serve, "http-signature", "--port", str(signature_port)],
            env={"PATH": "/usr/bin:/bin"},
            cwd=directory,
        )
        await asyncio.gather(
            wait_until_answering(processes, "verify-actor", f"http://127.0.0.1:{verify_port}/"),
            # Unsigned, the checker answers 401 with its explanation: it is up.
            wait_until_answering(
                processes,
                "http-signature",
                f"http://127.0.0.1:{signature_port}/",
                ok=lambda response: response.status_code == 401,
            ),
        )
        yield Pasture(
            verify_actor=f"http://127.0.0.1:{verify_port}",
            domain=domain,
            http_signature=f"http://pasture-signature.localhost:{signature_port}",
            processes=processes,
        )
    finally:
        await asyncio.to_thread(processes.stop_all)


async def verify(client: httpx.AsyncClient, pasture: Pasture, actor_uri: str) -> dict[str, Any]:
    response = await client.get(
        f"{pasture.verify_actor}/",
        params={"actor_uri": actor_uri},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return {"result": body["result"], "steps": json.loads(body["messages"])["steps"]}


@pytest.fixture(scope="module")
async def verifications(pasture: Pasture, platform: Platform) -> dict[str, dict[str, Any]]:
    """pasture's verify-actor report for each of our actors: {"result", "steps"}."""
    async with http_client(timeout=VERIFY_ALL_TIMEOUT) as client:
        reports = await asyncio.gather(
            *(verify(client, pasture, platform.actor_url(actor)) for actor in ACTORS)
        )
    return dict(zip(ACTORS, reports, strict=True))


def steps_of(report: dict[str, Any], pasture_actor: str) -> list[Any]:
    """The steps pasture logged while verifying with one of its actors."""
    steps: list[Any] = report["steps"]
    start = steps.index(f"Running verification for {pasture_actor}")
    end = next(
        (
            index
            for index in range(start + 1, len(steps))
            if isinstance(steps[index], str) and steps[index].startswith("Running verification")
        ),
        len(steps),
    )
    return steps[start:end]


def explain(report: dict[str, Any], platform: Platform, pasture: Pasture) -> str:
    return (
        f"pasture's result: {json.dumps(report['result'], indent=1)}\n"
        f"pasture's steps:\n{json.dumps(report['steps'], indent=1)}\n"
        f"{pasture.processes.tail('verify-actor', 30)}\n{platform.log_tails(15)}"
    )


@pytest.mark.parametrize("actor", ACTORS)
def test_verify_actor_reports_every_check_green(
    actor: str,
    verifications: dict[str, dict[str, Any]],
    platform: Platform,
    pasture: Pasture,
) -> None:
    report = verifications[actor]
    print(f"\npasture verify-actor {platform.actor_url(actor)}: {json.dumps(report['result'])}")
    assert report["result"] == GREEN, explain(report, platform, pasture)
    # And for the reasons the checks stand for: the unsigned POSTs were refused (401 for the
    # missing signature, or 400: pasture's unsigned body is not an activity, and the body is
    # read first), the signed Likes got 202 (pasture counts a 400 as "posted" too; we do not).
    for pasture_actor in UNSIGNED:
        refusals = {f"Got {status} for unsigned POST" for status in (400, 401)}
        assert refusals & set(map(str, steps_of(report, pasture_actor))), explain(
            report, platform, pasture
        )
    for pasture_actor in SIGNED:
        steps = steps_of(report, pasture_actor)
        assert "Successfully posted to inbox with result" in steps, explain(
            report, platform, pasture
        )
        status = steps[steps.index("Successfully posted to inbox with result") + 1]
        assert status == 202, explain(report, platform, pasture)


ACCESS = re.compile(r'"(GET|POST) (/[^ ?"]*)[^"]*" (\d{3})')


def test_our_key_fetches_were_signed(
    verifications: dict[str, dict[str, Any]], platform: Platform, pasture: Pasture
) -> None:
    """claire's and frank's actors answer only signed GETs (401 otherwise): each of our actors
    fetched them with a signature that pasture verified, and never unsigned."""
    log = pasture.processes.logs["verify-actor"].read_text(errors="replace")
    fetches = [
        (path.lstrip("/"), int(status))
        for method, path, status in ACCESS.findall(log)
        if method == "GET" and path.lstrip("/") in SIGNED_KEY_FETCH_ONLY
    ]
    assert fetches, f"pasture's log shows no fetch of claire or frank:\n{log[-3000:]}"
    assert all(status == 200 for _, status in fetches), fetches
    for pasture_actor in SIGNED_KEY_FETCH_ONLY:
        assert (pasture_actor, 200) in fetches


# ---------------------------------------------------------------------------------------------
# The http-signature checker, sent our requests by RemoteClient (the code that fetches and
# delivers for real): a GET signed by the instance actor, a POST signed by the blog actor.


@pytest.fixture(scope="module")
async def signers(platform: Platform) -> dict[str, Signer]:
    """The instance actor's and the blog actor's signers, over the keypair the servers use."""
    engine = create_async_engine(asyncpg_url(platform.database_url))
    try:
        async with AsyncSession(engine) as session:
            found = {
                "instance": await get_instance_signer(session, platform.settings),
                "blog": await get_actor_signer(session, platform.settings, "blog"),
            }
            await session.commit()  # the keypair, if this was the first to need it
    finally:
        await engine.dispose()
    return found


async def checker_log(pasture: Pasture, key_id: str) -> str:
    """The checker's log, and what it got when it fetched our key (it sends aiohttp's default
    ``Accept: */*``, and reads a PEM only from a JSON answer)."""
    async with http_client() as client:
        response = await client.get(key_id, headers={"Accept": "*/*"})
    return (
        f"GET {key_id} with Accept */* (as the checker fetches it): {response.status_code} "
        f"{response.headers.get('content-type')}\n{pasture.processes.tail('http-signature', 25)}"
    )


async def test_http_signature_checker_accepts_our_signed_get(
    platform: Platform, pasture: Pasture, signers: dict[str, Signer]
) -> None:
    """A GET signed by the instance actor, as every outgoing fetch is: the checker fetches our
    key by its id (unsigned, Accept */*) and verifies the signature (200, else 401)."""
    assert signers["instance"].key_id == platform.key_id(urls.INSTANCE_ACTOR)
    async with RemoteClient(platform.settings) as client:
        try:
            answer = await client.get_json(f"{pasture.http_signature}/", signer=signers["instance"])
        except RemoteFetchError as exc:
            log = await checker_log(pasture, signers["instance"].key_id)
            pytest.fail(f"the checker refused our signed GET: {exc}\n{log}")
    assert "SUCCESS!!!" in answer["steps"], json.dumps(answer, indent=1)


async def test_http_signature_checker_accepts_our_signed_post(
    platform: Platform, pasture: Pasture, signers: dict[str, Signer]
) -> None:
    """A POST signed by the blog actor with a Digest, as every delivery is (202, else 401)."""
    assert signers["blog"].key_id == platform.key_id("blog")
    activity = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "type": "Like",
        "id": f"{platform.actor_url('blog')}#likes/interop",
        "actor": platform.actor_url("blog"),
        "object": "http://pasture.example/objects/1",
    }
    async with RemoteClient(platform.settings) as client:
        answer = await client.post_json(
            f"{pasture.http_signature}/", json.dumps(activity).encode(), signer=signers["blog"]
        )
    body = answer.body.decode(errors="replace")
    if answer.status != 202:
        log = await checker_log(pasture, signers["blog"].key_id)
        pytest.fail(f"the checker refused our signed POST: {answer.status}: {body}\n{log}")
    assert "SUCCESS!!!" in json.loads(body)["steps"]


def test_pasture_is_the_pinned_version(pasture_venv: Path) -> None:
    requirements = (PASTURE_DIR / "requirements.txt").read_text()
    assert "fediverse-pasture==0.2.25" in requirements.splitlines()
    site_packages = pasture_venv.parents[1] / "lib" / "python3.11" / "site-packages"
    installed = list(site_packages.glob("fediverse_pasture-*"))
    assert [path.name for path in installed] == ["fediverse_pasture-0.2.25.dist-info"]
