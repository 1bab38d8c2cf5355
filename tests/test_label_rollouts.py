"""Rollouts act on ``production`` only (issue 24): while a canary runs, a process on another
label is served that label's version as it is, with no arm, whichever version the label names,
and a promotion moves production, never the other label."""

from __future__ import annotations

import uuid

import httpx

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

KEYS = [f"user-{i}" for i in range(40)]


def test_a_label_is_served_as_it_is_while_production_runs_a_rollout(
    local_server: LocalServer,
) -> None:
    name = f"label-canary-{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        client.create_task(name, prompt_text="v1 {{ x }}")
        v1 = client.get_prompt(name)
        v2 = client.create_prompt_version(name, "v2 {{ x }}")
        v3 = client.create_prompt_version(name, "v3 {{ x }}")
        client.start_rollout(name, str(v2.id), share=0.5, min_samples=1000)
        client.set_label(name, "staging", str(v3.id))

        # production: both arms, stickily by key
        production = {k: ct.prompt(name, key=k, client=client) for k in KEYS}
        assert {(p.id, p.served_arm) for p in production.values()} == {
            (v1.id, "active"), (v2.id, "candidate")}
        # staging: its own version, no arm, for every key
        staged = {(p.id, p.served_arm) for p in
                  (ct.prompt(name, key=k, label="staging", client=client) for k in KEYS)}
        assert staged == {(v3.id, None)}
        raw = httpx.get(f"{local_server.base_url}/api/v1/prompts/{name}",
                        params={"label": "staging"},
                        headers={"X-API-Key": local_server.api_key}).json()
        assert raw["id"] == str(v3.id) and raw.get("rollout") is None

        # the label on the candidate itself: still one version, no arm
        client.set_label(name, "staging", str(v2.id))
        staged = {(p.id, p.served_arm) for p in
                  (ct.prompt(name, key=k, label="staging", client=client) for k in KEYS)}
        assert staged == {(v2.id, None)}

        # a promotion moves production only
        client.stop_rollout(name, "promote")
        assert client.get_prompt(name).id == v2.id
        assert client.get_prompt(name, label="staging").id == v2.id
        labels = {p.version_number: sorted(p.labels or []) for p in
                  client.list_prompt_versions(name)}
        assert labels == {1: [], 2: ["production", "staging"], 3: []}
