"""More of ``radbridge run`` as a DICOM SCP: compressed transfer syntaxes kept as received, peers rejected by
network, DICOM over TLS, concurrent associations, and forwarding from storescu through radbridge to Orthanc."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

from tests.integration.dicom import dcmtk, dicom_config, make_study, metric, scrape
from tests.integration.helpers import EngineProcess, free_port, wait_until
from tests.integration.orthanc import Orthanc

pytestmark = pytest.mark.integration

#: Files of pydicom's test data, one per transfer syntax family.
COMPRESSED = ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "image_dfl.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"]  # fmt: skip


def start_engine(tmp: Path, factory: Callable[..., EngineProcess], **kwargs: str) -> tuple[EngineProcess, int, int]:
    """A running engine with one dicom_scp channel; returns (engine, dicom port, metrics port)."""
    port, metrics_port = free_port(), free_port()
    config = tmp / "radbridge.yaml"
    config.write_text(dicom_config(tmp / "data", port, metrics_port, **kwargs))
    return factory(config).start_ready(), port, metrics_port


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information (what the sender's encoding is)."""
    raw = path.read_bytes()
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


@pytest.mark.parametrize("name", COMPRESSED)
def test_every_transfer_syntax_is_kept_as_received(name: str, tmp_path: Path, engine_factory, monkeypatch) -> None:
    """JPEG 2000, RLE, JPEG, JPEG-LS, deflate, implicit and big-endian instances are archived byte for byte."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    src = Path(get_testdata_file(name))
    ds = dcmread(src, stop_before_pixels=True)
    engine, port, _ = start_engine(tmp_path, engine_factory)
    try:
        ae = AE("PYSCU")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(src)
        finally:
            assoc.release()
        assert status.Status == 0x0000, hex(status.Status)
        (stored,) = (tmp_path / "data" / "archive").rglob(f"{ds.SOPInstanceUID}.dcm")
        assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert dataset_bytes(stored) == dataset_bytes(src)
    finally:
        engine.terminate()


def test_peer_outside_allowed_networks_is_rejected(tmp_path: Path, engine_factory) -> None:
    """With allowed_networks not covering 127.0.0.1 every association is rejected, and counted by reason."""
    engine, port, metrics_port = start_engine(
        tmp_path, engine_factory, extra_source="      allowed_networks: [10.0.0.0/8]"
    )
    try:
        refused = dcmtk("echoscu", "-aec", "RADBRIDGE", "127.0.0.1", str(port))
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout
        text = scrape(metrics_port)
        assert metric(text, "radbridge_dicom_associations_total", channel="images", outcome="rejected_address") == 1
    finally:
        engine.terminate()


def _certificates(folder: Path) -> tuple[Path, Path, Path, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def make(name: str, issuer_key=None, issuer_name=None, ca: bool = False, san: bool = False):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if san:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    ca_key, ca_cert = make("test CA", ca=True)
    srv_key, srv_cert = make("127.0.0.1", ca_key, ca_cert.subject, san=True)
    cli_key, cli_cert = make("modality", ca_key, ca_cert.subject)
    paths = []
    for name, obj in (("ca.pem", ca_cert), ("server.pem", srv_cert), ("client.pem", cli_cert)):
        (folder / name).write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        paths.append(folder / name)
    for name, key in (("server.key", srv_key), ("client.key", cli_key)):
        (folder / name).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        paths.append(folder / name)
    return tuple(paths)  # type: ignore[return-value]


def test_dicom_over_tls_requires_a_client_certificate(tmp_path: Path, engine_factory) -> None:
    """With tls and a CA the SCP completes a TLS handshake with a certified client and refuses one without."""
    ca, cert, client_cert, key, client_key = _certificates(tmp_path)
    tls = f"      tls: {{cert: {cert.name}, key: {key.name}, ca: {ca.name}}}"
    engine, port, _ = start_engine(tmp_path, engine_factory, extra_source=tls)
    try:
        ae = AE("PYSCU")
        ae.add_requested_context(Verification)
        good = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        good.load_cert_chain(str(client_cert), str(client_key))
        assoc = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE", tls_args=(good, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        refused = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE", tls_args=(anonymous, "127.0.0.1"))
        assert not refused.is_established
        plain = dcmtk("echoscu", "-aec", "RADBRIDGE", "127.0.0.1", str(port))
        assert plain.returncode != 0  # no TLS at all: no association
    finally:
        engine.terminate()


def test_four_concurrent_associations(tmp_path: Path, engine_factory) -> None:
    """Four storescu processes at once each store their study completely."""
    engine, port, metrics_port = start_engine(tmp_path, engine_factory)
    try:
        studies = [make_study(tmp_path / f"s{i}", 10, series=2, patient_id=f"P{i}") for i in range(4)]
        results: list[subprocess.CompletedProcess] = []

        def send(files: list[Path]) -> None:
            results.append(dcmtk("storescu", "-aec", "RADBRIDGE", "127.0.0.1", str(port), *map(str, files)))

        threads = [threading.Thread(target=send, args=(files,)) for files in studies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        assert metric(scrape(metrics_port), "radbridge_dicom_instances_stored_total", channel="images") == 40
    finally:
        engine.terminate()


def test_storescu_to_radbridge_to_orthanc(tmp_path: Path, engine_factory) -> None:
    """Instances stored into radbridge are forwarded by a dicom_scu destination and arrive in Orthanc once each."""
    pacs = Orthanc(tmp_path / "orthanc").start()
    try:
        dest = f"""    destinations:
      - name: pacs
        type: dicom_scu
        ae_title: {pacs.aet}
        host: 127.0.0.1
        port: {pacs.dicom_port}
        filter: 'Modality == "CT"'"""
        engine, port, metrics_port = start_engine(tmp_path, engine_factory, destinations=dest)
        try:
            files = make_study(tmp_path / "study", 8, series=2)
            sent = dcmtk("storescu", "-aec", "RADBRIDGE", "127.0.0.1", str(port), *map(str, files))
            assert sent.returncode == 0, sent.stderr
            wait_until(lambda: pacs.count() == 8, 60, what="8 instances in Orthanc")
            wait_until(
                lambda: metric(scrape(metrics_port), "radbridge_messages_sent_total", channel="images", destination="pacs") == 8,
                20, what="8 deliveries SENT",
            )  # fmt: skip
        finally:
            engine.terminate()
    finally:
        pacs.stop()
