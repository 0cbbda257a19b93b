"""K over a Unix socket (same schema, same mTLS), through the byte relay, and vsock where it connects."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
from ppml_hybrid.keyservice.main import start_key_service
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import key_service_registry, party_name
from ppml_hybrid.rpc.keyservice_verify import check_key_service, policy_from_config
from ppml_hybrid.rpc.sockets import unix_path
from ppml_hybrid.rpc.vsock_relay import SocketRelay


@pytest.fixture(scope="module")
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="ks", dir="/tmp"))  # AF_UNIX paths are limited to 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def k_unix(short_dir):
    pki = test_pki(2)
    ks = keyservice_config(address=f"unix:{short_dir}/k.sock")
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=ks, client_ca_pem=pki.ca.cert_pem,
                          registry=key_service_registry(pki=pki, parties=2))
    running = start_key_service(spec=spec)
    yield running, ks, pki
    running.stop()


def _client(address, running, pki):
    return PartyKeyClient(address=address, server_trust_pem=running.trust_pem, credential=pki.clients[party_name(1)],
                          timeout_s=20.0)


def test_key_service_over_unix_socket(k_unix, short_dir):
    running, ks, pki = k_unix
    assert running.address == f"unix:{short_dir}/k.sock"
    assert oct((short_dir / "k.sock").stat().st_mode & 0o777) == "0o600"
    with _client(running.address, running, pki) as c:
        published = c.get_public_material()
        assert published.material.digest() == running.public_material_sha256
        check_key_service(client=c, published=published, keyservice=ks, tls_trust_pem=running.trust_pem,
                          registry=running.registry,
                          policy=policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem,
                                                    accept_development=True))


def test_relay_carries_tls_to_k_unchanged(k_unix, short_dir):
    running, ks, pki = k_unix
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(short_dir / "relay.sock"))
    listener.listen(8)
    relay = SocketRelay(listener=listener, target_path=str(unix_path(running.address))).start()
    try:
        with _client(f"unix:{short_dir}/relay.sock", running, pki) as c:
            assert c.get_public_material().material.digest() == running.public_material_sha256
    finally:
        relay.stop()


def test_relative_or_taken_unix_path_refused(short_dir):
    with pytest.raises(ConfigError):
        unix_path("unix:relative.sock")
    taken = short_dir / "taken.sock"
    taken.write_bytes(b"")
    pki = test_pki(2)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=keyservice_config(address=f"unix:{taken}"),
                          client_ca_pem=pki.ca.cert_pem, registry=key_service_registry(pki=pki, parties=2))
    with pytest.raises(ConfigError):
        start_key_service(spec=spec)


def _vsock_loopback_connects() -> bool:
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        srv = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        srv.bind((1, socket.VMADDR_PORT_ANY if hasattr(socket, "VMADDR_PORT_ANY") else 0xFFFFFFFF))
        srv.listen(1)
        port = srv.getsockname()[1]
        cli = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        cli.settimeout(1.0)
        cli.connect((1, port))
        cli.close()
        srv.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _vsock_loopback_connects(), reason="vsock loopback (CID 1) does not connect on this machine "
                    "(DESIGN.md section 10); the vsock relay is tested with a Unix listener instead")
def test_key_service_over_vsock_relay(k_unix):  # pragma: no cover - needs vsock loopback
    from ppml_hybrid.rpc.vsock_relay import vsock_listener

    running, ks, pki = k_unix
    listener = vsock_listener(port=0xFFFFFFFF, cid=1)
    port = listener.getsockname()[1]
    relay = SocketRelay(listener=listener, target_path=str(unix_path(running.address))).start()
    try:
        with _client(f"vsock:1:{port}", running, pki) as c:
            assert c.get_public_material().material.digest() == running.public_material_sha256
    finally:
        relay.stop()
