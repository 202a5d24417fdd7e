"""Presentation contexts the ``dicom_scp`` supports.

Storage: every storage SOP class pynetdicom knows, each with every transfer syntax it knows
(instances are kept as received, so whatever the sender proposes is accepted as is). The
storage contexts also accept an SCP role proposed by a C-GET requestor (role selection, PS3.7
D.3.3.4): the C-GET sub-operations are C-STOREs from us to the requestor on its association.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, build_context
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from channels.dicom.common import storage_contexts

QR_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)


def scp_contexts(
    *, storage: bool = True, query_retrieve: bool = True, worklist: bool = False, mpps: bool = False
) -> list[Any]:
    """The supported presentation contexts: Verification, storage, query/retrieve, worklist, MPPS."""
    contexts = [build_context(Verification, DEFAULT_TRANSFER_SYNTAXES)]
    if storage or query_retrieve:
        for cx in storage_contexts():
            if query_retrieve:
                # Role selection (PS3.7 D.3.3.4): accept a C-GET requestor's proposal to be the storage
                # SCP, and a plain storage SCU that proposes its role explicitly.
                cx.scp_role = True
                cx.scu_role = True
            contexts.append(cx)
    if query_retrieve:
        contexts.extend(build_context(uid, DEFAULT_TRANSFER_SYNTAXES) for uid in QR_MODELS)
    if worklist:
        contexts.append(build_context(ModalityWorklistInformationFind, DEFAULT_TRANSFER_SYNTAXES))
    if mpps:
        contexts.append(build_context(ModalityPerformedProcedureStep, DEFAULT_TRANSFER_SYNTAXES))
    return contexts
