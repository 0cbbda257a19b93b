"""The enclave's entry point (no socat in the image): the real K started by
``keyservice.enclave_entry`` over Unix sockets standing in for vsock (vsock loopback does not
connect on these machines). The spec sent on the spec port reaches K's stdin, K's ready line
reaches the parent, and a connection on the relay port reaches K's TLS server (the certificate it
presents is issued by the trust anchor the ready line announces)."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.keyservice.enclave_entry import read_all, run_entry
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import key_service_registry
from ppml_hybrid.rpc.launch import READY


def _listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    return s


def test_entry_relays_to_k_hands_it_the_spec_and_returns_its_ready_line(tmp_path):
    ks_sock = tmp_path / "k.sock"
    pki = test_pki(2)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=keyservice_config(address=f"unix:{ks_sock}"),
                          client_ca_pem=pki.ca.cert_pem, registry=key_service_registry(pki=pki, parties=2))
    relay, spec_in, parent = (_listener(tmp_path / n) for n in ("relay.sock", "spec.sock", "parent.sock"))

    def connect_parent() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(tmp_path / "parent.sock"))
        return s

    started, status = [], []
    entry = threading.Thread(target=lambda: status.append(run_entry(
        relay_listener=relay, spec_listener=spec_in, connect_parent=connect_parent, ks_socket=str(ks_sock),
        k_command=[sys.executable, "-m", "ppml_hybrid.keyservice"], started=started)), daemon=True)
    entry.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # the parent sends the spec (run.sh: socat)
        s.connect(str(tmp_path / "spec.sock"))
        s.sendall(json.dumps(spec.to_json()).encode())
    parent.settimeout(300)
    conn, _ = parent.accept()
    with conn:
        line = read_all(conn).decode()
    assert line.startswith(READY), line
    ready = json.loads(line[len(READY):])
    assert ready["address"] == f"unix:{ks_sock}"
    # through the relay port to K's TLS server: it presents the certificate the ready line announced
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect(str(tmp_path / "relay.sock"))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            presented = ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(presented.encode())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ready["trust_pem"].encode()))  # K's own key
    started[0].send_signal(signal.SIGTERM)
    entry.join(timeout=30)
    assert not entry.is_alive() and status and status[0] is not None
