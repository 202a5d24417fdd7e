"""The indexed header values read on the hot path agree with the general accessor."""

from __future__ import annotations

import random

from engine.hl7.header import header_values
from engine.hl7.message import HL7Message

VALUES = ["", "A", "A^B", "A~B", "\\F\\x", "P1^^^H~P2", "^X", "~Y", "x\\S\\y"]


def reference(msg: HL7Message) -> dict:
    """The same values through HL7Message.get (the slow, general way)."""
    accession = msg.get("IPC-1.1") or msg.get("OBR-18.1")
    return {
        "control_id": msg.get("MSH-10")[:64] or None,
        "sending_app": msg.get("MSH-3", raw=True)[:180] or None,
        "sending_facility": msg.get("MSH-4", raw=True)[:180] or None,
        "message_type": msg.message_type[:32] or None,
        "patient_id": msg.get("PID-3[1].1")[:64] or None,
        "accession": accession[:64] or None,
    }


def test_header_values_match_the_accessor_on_random_messages() -> None:
    """2,000 generated messages (missing, repeated, escaped and empty fields) give identical values."""
    rng = random.Random(20261201)
    for _ in range(2000):
        msh = "|".join(
            ["MSH", "^~\\&", rng.choice(VALUES), rng.choice(VALUES), "R", "F", "2024", "",
             rng.choice(["ORM^O01", "ADT", "", "O\\S\\X^A01^Z", "^A01"]), rng.choice(VALUES), "P", "2.5"]
        )  # fmt: skip
        segments = [msh]
        for name in rng.sample(["PID", "IPC", "OBR", "ORC", "PID", "OBR"], rng.randint(0, 5)):
            segments.append("|".join([name, *(rng.choice(VALUES) for _ in range(rng.randint(0, 20)))]))
        text = "\r".join(segments)
        assert header_values(HL7Message(text)) == reference(HL7Message(text)), text


def test_header_values_of_an_orm() -> None:
    """An ORM^O01 gives its MSH-10, sender, type, PID-3 and OBR-18 accession."""
    text = "MSH|^~\\&|HIS|HOSP|RIS|RAD|2024||ORM^O01|C1|P|2.3.1\rPID|1||MRN1^^^HOSP~X||DOE\rOBR|1" + "|" * 17 + "ACC9^X"
    assert header_values(HL7Message(text)) == {
        "control_id": "C1",
        "sending_app": "HIS",
        "sending_facility": "HOSP",
        "message_type": "ORM^O01",
        "patient_id": "MRN1",
        "accession": "ACC9",
    }
