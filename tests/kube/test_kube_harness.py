"""The harness itself: the pinned control plane starts, authenticates by
token, authorizes by RBAC and stores objects."""

import json
import ssl
import urllib.error
import urllib.request

import kubeharness
import pytest


def test_apiserver_is_the_pinned_version(kube):
    want = kubeharness.versions()["KUBERNETES_VERSION"]
    assert kube.api("GET", "/version")["gitVersion"] == want
    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == want
    assert out["serverVersion"]["gitVersion"] == want


def test_requests_without_a_valid_token_are_rejected(kube):
    for token in ("", "not-the-token"):
        with pytest.raises(urllib.error.HTTPError) as e:
            kube.api("GET", "/api/v1/namespaces", token=token)
        assert e.value.code == 401


def test_serving_certificate_verifies_against_the_generated_ca(kube):
    ctx = ssl.create_default_context(cafile=str(kube.ca_file))
    req = urllib.request.Request(kube.server + "/readyz",
                                 headers={"Authorization": f"Bearer {kube.token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        assert r.read() == b"ok"


def test_objects_round_trip_through_etcd(kube):
    ns = "harness-roundtrip"
    kube.kubectl("create", "namespace", ns)
    try:
        kube.kubectl("-n", ns, "create", "configmap", "c", "--from-literal=k=v")
        got = kube.api("GET", f"/api/v1/namespaces/{ns}/configmaps/c")
        assert got["data"] == {"k": "v"}
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_rbac_is_enforced_for_service_accounts(kube):
    # A service account without bindings may do nothing.
    cp = kube.kubectl("auth", "can-i", "list", "pods", "-n", "default",
                      "--as=system:serviceaccount:default:nobody", check=False)
    assert cp.stdout.strip() == "no"
