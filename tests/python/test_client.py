#!/usr/bin/env python3
"""Third-party client test for the govshare gateway, written against the
.proto files only, with the stock Python gRPC stack (grpcio, grpcio-tools,
grpcio-reflection) and `cryptography` for the audit-log signature.

It compiles the protos at run time, connects over mutual TLS with a
department's certificate and bearer token, and checks what an outside
implementer would rely on: field masking and absence, scope (out-of-scope
answers exactly like absent), authentication, server reflection, an
RFC 9162 inclusion proof under an Ed25519-signed C2SP checkpoint, verified
here without any of the gateway's code, the resident tracker, and a
correction's round trip to the source department.

    python test_client.py --addr 127.0.0.1:PORT --pki DATA_DIR/pki \
        --proto-dir /work/main/proto --persons-file PERSONS.json

PERSONS.json: {"inside_with_phone": {...}, "outside": {...}}, each a person in
proto3 JSON (camelCase or snake_case keys): idNumber, name, phone, birthDate,
residenceGrid. "inside_with_phone" lives in street 310115001 and has a phone;
"outside" lives elsewhere in the district.

Exit code 0 when every check passes; 1 with a FAIL line naming the broken
check otherwise; 2 when the test could not be set up (bad arguments, protoc
failure, missing files).
"""

import argparse
import atexit
import base64
import glob
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

import grpc

STREET = "310115001"
ABSENT_ID = "11010519491231002X"  # well-formed (valid check digit), in no data set
CALL_TIMEOUT = 30.0


class CheckFailed(AssertionError):
    pass


class Checks:
    def __init__(self):
        self.passed = 0

    def __call__(self, cond, msg):
        """An assert that survives `python -O` and counts."""
        if not cond:
            raise CheckFailed(msg)
        self.passed += 1


check = Checks()


def step(msg):
    print(f"ok   {msg}", flush=True)


# ---------------------------------------------------------------- setup


def compile_protos(proto_dir):
    """Compile proto_dir/govshare/{v1,v2}/*.proto into a temp dir on sys.path."""
    from grpc_tools import protoc

    try:
        import importlib.resources as resources

        well_known = str(resources.files("grpc_tools") / "_proto")
    except (ImportError, AttributeError):  # pragma: no cover - old Pythons
        import pkg_resources

        well_known = pkg_resources.resource_filename("grpc_tools", "_proto")
    protos = sorted(glob.glob(os.path.join(proto_dir, "govshare", "v[12]", "*.proto")))
    if not protos:
        raise SystemExit(f"setup: no .proto files under {proto_dir}/govshare/v1 and v2")
    out = tempfile.mkdtemp(prefix="govshare-pystubs-")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    if rc != 0:
        raise SystemExit(f"setup: grpc_tools.protoc exited {rc}")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    sys.path.insert(0, out)
    return out


def load(name):
    """`population_pb2` from govshare.v1; `v2.population_pb2` from govshare.v2."""
    if name.startswith("v2."):
        return importlib.import_module(f"govshare.{name}")
    return importlib.import_module(f"govshare.v1.{name}")


def read(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError as e:
        raise SystemExit(f"setup: cannot read {path}: {e}")


def channel_for(addr, pki, identity):
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(os.path.join(pki, "ca.pem")),
        private_key=read(os.path.join(pki, f"{identity}.key")),
        certificate_chain=read(os.path.join(pki, f"{identity}.pem")),
    )
    return grpc.secure_channel(
        addr, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def auth(pki, identity):
    token = read(os.path.join(pki, f"{identity}.token"), "r").strip()
    return [("authorization", "Bearer " + token)]


def field(person, snake):
    """A person's field from proto3 JSON: camelCase, or snake_case."""
    parts = snake.split("_")
    camel = parts[0] + "".join(p.title() for p in parts[1:])
    for k in (camel, snake):
        if k in person:
            return person[k]
    return None


def load_persons(path):
    data = json.loads(read(path, "r"))
    people = {}
    for role in ("inside_with_phone", "outside"):
        p = data.get(role) or data.get("insideWithPhone" if role != "outside" else role)
        if not isinstance(p, dict):
            raise SystemExit(f"setup: {path} has no object {role!r}")
        people[role] = p
    inside, outside = people["inside_with_phone"], people["outside"]
    for role, p in people.items():
        for f in ("id_number", "name", "birth_date", "residence_grid"):
            if not field(p, f):
                raise SystemExit(f"setup: {role} in {path} lacks {f}")
    if not field(inside, "phone"):
        raise SystemExit(f"setup: inside_with_phone in {path} has no phone")
    if not field(inside, "residence_grid").startswith(STREET):
        raise SystemExit(f"setup: inside_with_phone does not live in street {STREET}")
    if field(outside, "residence_grid").startswith(STREET):
        raise SystemExit(f"setup: outside lives in street {STREET}")
    return inside, outside


# ------------------------------------------------- RFC 9162 and signed notes


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index, size, leaf_hash, proof):
    """RFC 9162 section 2.1.3.2; returns the root the proof leads to."""
    if index >= size:
        raise CheckFailed(f"inclusion proof: index {index} >= tree size {size}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise CheckFailed("inclusion proof: longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckFailed("inclusion proof: shorter than the path to the root")
    return r


def self_test_inclusion_verifier(max_size=33):
    """Check root_from_inclusion_proof against RFC 9162's own definitions
    (MTH and PATH, section 2.1.1 and 2.1.3.1) on every leaf of small trees, so
    that a pass against the gateway does not rest on two matching mistakes."""

    def mth(leaves):
        if len(leaves) == 1:
            return leaves[0]
        k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of 2 < n
        return node_hash(mth(leaves[:k]), mth(leaves[k:]))

    def path(m, leaves):
        if len(leaves) == 1:
            return []
        k = 1 << ((len(leaves) - 1).bit_length() - 1)
        if m < k:
            return path(m, leaves[:k]) + [mth(leaves[k:])]
        return path(m - k, leaves[k:]) + [mth(leaves[:k])]

    wrong = []
    for n in range(1, max_size + 1):
        leaves = [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(n)]
        root = mth(leaves)
        for m in range(n):
            if root_from_inclusion_proof(m, n, leaves[m], path(m, leaves)) != root:
                wrong.append(f"{m}/{n}")
    check(not wrong, f"self-test: inclusion verifier wrong for leaf/size {', '.join(wrong[:10])}")


def parse_verifier_key(vkey):
    """C2SP signed-note verifier key: <name>+<hex key id>+<base64(0x01||pub)>."""
    name, key_hash, key_b64 = vkey.strip().split("+", 2)
    raw = base64.b64decode(key_b64, validate=True)
    check(len(raw) == 33 and raw[0] == 0x01, f"verifier key {vkey!r}: not an Ed25519 key")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    check(
        key_id.hex() == key_hash.lower() and len(key_hash) == 8,
        f"verifier key: key id {key_hash} != SHA-256(name||\\n||0x01||pub)[:4] = {key_id.hex()}",
    )
    return name, key_id, raw[1:]


def verify_note(note, vkey):
    """Check the note's signature by vkey; return its text lines."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, key_id, pub = parse_verifier_key(vkey)
    check(note.endswith("\n"), "checkpoint note does not end with a newline")
    split = note.rfind("\n\n")
    check(split >= 0, "checkpoint note has no blank line before its signatures")
    text, sigs = note[: split + 1], note[split + 2 :]
    matched = 0
    for line in sigs.splitlines():
        check(line.startswith("\u2014 "), f"signature line does not start with an em dash: {line!r}")
        sig_name, _, b64 = line[2:].rpartition(" ")
        blob = base64.b64decode(b64, validate=True)
        check(len(blob) > 4, f"signature line too short: {line!r}")
        if sig_name != name or blob[:4] != key_id:
            continue
        check(len(blob) == 68, f"Ed25519 signature blob is {len(blob)} bytes, not 4+64")
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode())
        except InvalidSignature:
            raise CheckFailed("checkpoint note: Ed25519 signature does not verify")
        matched += 1
    check(matched == 1, f"checkpoint note: {matched} signatures by {name} (key id {key_id.hex()}), want 1")
    return name, text.splitlines()


# ----------------------------------------------------------------- tests


def call(method, request, metadata):
    return method(request, metadata=metadata, timeout=CALL_TIMEOUT)


def expect_status(fn, code, what):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: status {e.code()} ({e.details()!r}), want {code}")
        return e
    raise CheckFailed(f"{what}: succeeded, want {code}")


def test_civil_affairs(args, pb, inside):
    common, pop, pop_grpc = pb["common_pb2"], pb["population_pb2"], pb["population_pb2_grpc"]
    md = auth(args.pki, "civil-affairs")
    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        stub = pop_grpc.PopulationServiceStub(ch)
        req = pop.GetPersonRequest(
            context=common.PullContext(purpose="social-assistance", case_id="PY-1", operator="py-client"),
            id_number=field(inside, "id_number"),
        )
        resp = call(stub.GetPerson, req, md)
    p = resp.person
    src_id, src_phone = field(inside, "id_number"), field(inside, "phone")

    check(p.HasField("name") and p.name == field(inside, "name"),
          f"name: {p.name!r}, want the clear source value {field(inside, 'name')!r}")
    want_id = src_id[:6] + "********" + src_id[-4:]
    check(p.HasField("id_number") and p.id_number == want_id,
          f"id_number: {p.id_number!r}, want masked {want_id!r}")
    want_phone = src_phone[:3] + "****" + src_phone[-4:]
    check(p.HasField("phone") and p.phone == want_phone,
          f"phone: {p.phone!r}, want masked {want_phone!r}")
    want_birth = field(inside, "birth_date")[:4]
    check(p.HasField("birth_date") and p.birth_date == want_birth,
          f"birth_date: {p.birth_date!r}, want the year {want_birth!r}")
    check(p.HasField("residence_grid") and p.residence_grid == field(inside, "residence_grid"),
          f"residence_grid: {p.residence_grid!r}, want {field(inside, 'residence_grid')!r}")
    step("civil-affairs GetPerson: name clear; id_number, phone, birth_date masked")

    for f in ("sex", "ethnicity", "hukou_address", "household_id", "restricted_tags", "version",
              "marital_status", "education", "hukou_division", "population_type", "relation_to_head"):
        check(not p.HasField(f), f"{f}: present ({getattr(p, f)!r}) but civil-affairs has no grant for it")
        check(f not in p.views, f"views[{f!r}] present for an ungranted field")
    step("civil-affairs GetPerson: ungranted fields absent (HasField false), not empty")

    V = common.FieldView
    want_views = {"name": V.Value("FIELD_VIEW_CLEAR"), "id_number": V.Value("FIELD_VIEW_MASKED"),
                  "phone": V.Value("FIELD_VIEW_MASKED"), "birth_date": V.Value("FIELD_VIEW_MASKED"),
                  "residence_grid": V.Value("FIELD_VIEW_CLEAR")}
    for f, v in want_views.items():
        got = p.views.get(f)
        check(got == v, f"views[{f!r}] = {got and V.Name(got)}, want {V.Name(v)}")
    step("civil-affairs GetPerson: views map says CLEAR/MASKED per field")

    r = resp.receipt
    check(resp.HasField("receipt") and len(r.leaf_hash) == 32,
          f"receipt: want a 32-byte leaf hash, got {resp.receipt!r}")
    step(f"civil-affairs GetPerson: audit receipt leaf {r.leaf_index}")

    # govshare.v2: the same record, its views packed by field number.
    pop2, pop2_grpc = pb["v2.population_pb2"], pb["v2.population_pb2_grpc"]
    req.context.case_id = "PY-V2"
    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        resp2 = call(pop2_grpc.PopulationServiceStub(ch).GetPerson, req, md)
    p2 = resp2.person
    check(len(p2.record.views) == 0, "v2 record carries a views map")
    bare = pop.Person()
    bare.CopyFrom(p)
    bare.ClearField("views")
    check(p2.record == bare, f"v2 record differs from v1's: {p2.record} vs {bare}")
    numbers = {f.name: f.number for f in pop.Person.DESCRIPTOR.fields}
    want = [0] * max(numbers[f] for f in p.views)
    for f, v in p.views.items():
        want[numbers[f] - 1] = v
    check(list(p2.views) == want, f"v2 views {list(p2.views)}, want {want}")
    check(resp2.receipt.leaf_index > r.leaf_index, "v2 call has its own audit entry")
    step("civil-affairs GetPerson over govshare.v2: same record, views packed by field number")
    return r


def test_street_office(args, pb, inside, outside):
    common, pop, pop_grpc = pb["common_pb2"], pb["population_pb2"], pb["population_pb2_grpc"]
    md = auth(args.pki, "street-office")
    ctx = common.PullContext(purpose="grid-event-handling", case_id="PY-2")
    with channel_for(args.addr, args.pki, "street-office") as ch:
        stub = pop_grpc.PopulationServiceStub(ch)

        def get(id_number):
            return call(stub.GetPerson, pop.GetPersonRequest(context=ctx, id_number=id_number), md)

        p = get(field(inside, "id_number")).person
        check(p.HasField("id_number") and len(p.id_number) == 26,
              f"street-office id_number: {p.id_number!r}, want a 26-char pseudonym")
        check(field(inside, "id_number") not in p.id_number,
              f"street-office id_number {p.id_number!r} leaks the real ID")
        check(p.views.get("id_number") == common.FieldView.Value("FIELD_VIEW_PSEUDONYM"),
              f"street-office views['id_number'] = {p.views.get('id_number')}, want PSEUDONYM")
        check(p.name == field(inside, "name"), f"street-office name: {p.name!r}")
        check(not p.HasField("phone") and not p.HasField("birth_date"),
              "street-office got phone or birth_date, which its grant does not name")
        step(f"street-office GetPerson inside street: id_number is a 26-char pseudonym ({p.id_number})")

        again = get(field(inside, "id_number")).person
        check(again.id_number == p.id_number, "pseudonym is not stable across calls")

        e_out = expect_status(lambda: get(field(outside, "id_number")), grpc.StatusCode.NOT_FOUND,
                              "street-office GetPerson outside its street")
        e_abs = expect_status(lambda: get(ABSENT_ID), grpc.StatusCode.NOT_FOUND,
                              "street-office GetPerson for an ID that exists nowhere")
        check(e_out.details() == e_abs.details(),
              f"out-of-scope and absent are distinguishable: {e_out.details()!r} vs {e_abs.details()!r}")
        # What the gateway says, not the transport's own headers: `date`
        # differs when the two answers straddle a second.
        said = lambda e: sorted((k, v) for k, v in (e.trailing_metadata() or ())
                                if not k.startswith("grpc-") and k != "date")
        out_md, abs_md = said(e_out), said(e_abs)
        check(out_md == abs_md, f"trailers differ: {out_md!r} vs {abs_md!r}")
        step(f"street-office: outside and absent both NOT_FOUND with identical details {e_out.details()!r}")


def test_unauthenticated(args, pb, inside):
    common, pop, pop_grpc = pb["common_pb2"], pb["population_pb2"], pb["population_pb2_grpc"]
    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        stub = pop_grpc.PopulationServiceStub(ch)
        req = pop.GetPersonRequest(
            context=common.PullContext(purpose="social-assistance", case_id="PY-3"),
            id_number=field(inside, "id_number"),
        )
        expect_status(lambda: stub.GetPerson(req, timeout=CALL_TIMEOUT),
                      grpc.StatusCode.UNAUTHENTICATED, "GetPerson without a token")
        expect_status(lambda: stub.GetPerson(req, metadata=[("authorization", "Bearer not-a-token")],
                                             timeout=CALL_TIMEOUT),
                      grpc.StatusCode.UNAUTHENTICATED, "GetPerson with a garbage token")
    step("no token / bad token: UNAUTHENTICATED")


def test_reflection(args):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        want = {f"govshare.v1.{s}" for s in ("PopulationService", "LegalEntityService", "GridService",
                                              "PublishService", "AdminService", "AuditService",
                                              "ResidentService", "CorrectionService")}
        want.add("grpc.health.v1.Health")
        check(want <= services, f"reflection lacks {sorted(want - services)}; lists {sorted(services)}")
        # The descriptors must resolve too, not only the names.
        fd = db.FindFileContainingSymbol("govshare.v1.PopulationService")
        check(fd is not None, "reflection: no file for govshare.v1.PopulationService")
    step(f"reflection lists {len(services)} services incl. all govshare.v1 ones and health")


def test_inclusion(args, pb, receipt):
    audit, audit_grpc = pb["audit_pb2"], pb["audit_pb2_grpc"]
    md = auth(args.pki, "civil-affairs")
    trusted_vkey = read(os.path.join(args.pki, "audit-log.pub"), "r").strip()
    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        stub = audit_grpc.AuditServiceStub(ch)

        def proof_at(size):
            last = None
            for _ in range(10):
                try:
                    return call(stub.GetInclusionProof,
                                audit.GetInclusionProofRequest(index=receipt.leaf_index, tree_size=size), md)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise CheckFailed(f"GetInclusionProof(index={receipt.leaf_index}, tree_size={size}): "
                                          f"{e.code()} {e.details()!r}")
                    last = e
                    time.sleep(0.5)
            raise CheckFailed(f"GetInclusionProof stayed UNAVAILABLE: {last.details()!r}")

        proof = proof_at(0)
        cp = call(stub.GetCheckpoint, audit.GetCheckpointRequest(), md)
        if proof.tree_size != cp.tree_size:
            print(f"     proof was at size {proof.tree_size}, checkpoint at {cp.tree_size}: asking again",
                  flush=True)
            proof = proof_at(cp.tree_size)

    check(proof.index == receipt.leaf_index, f"proof index {proof.index} != receipt {receipt.leaf_index}")
    check(proof.tree_size == cp.tree_size, f"proof size {proof.tree_size} != checkpoint size {cp.tree_size}")
    check(cp.public_key.strip() == trusted_vkey,
          f"GetCheckpoint public_key {cp.public_key!r} != audit-log.pub {trusted_vkey!r}")

    name, lines = verify_note(cp.note, trusted_vkey)
    step(f"checkpoint note signed by {name} (Ed25519, key id checked)")

    check(len(lines) >= 3, f"checkpoint body has {len(lines)} lines, want origin, size, root")
    origin, size, root_b64 = lines[:3]
    check(origin == name, f"checkpoint origin {origin!r} != key name {name!r}")
    check(size == str(cp.tree_size), f"checkpoint size line {size!r} != tree_size {cp.tree_size}")
    root = base64.b64decode(root_b64, validate=True)
    check(root == cp.root_hash and len(root) == 32,
          f"checkpoint root line {root_b64!r} != root_hash {cp.root_hash.hex()}")

    computed = root_from_inclusion_proof(proof.index, proof.tree_size, receipt.leaf_hash, list(proof.hashes))
    check(computed == root, f"inclusion proof recomputes root {computed.hex()}, checkpoint says {root.hex()}")
    step(f"RFC 9162 inclusion of leaf {proof.index} in tree of {proof.tree_size} "
         f"({len(proof.hashes)} hashes) matches the signed root")

    # The verifier must also be able to fail: a wrong leaf must not verify.
    bogus = hashlib.sha256(b"\x00not-the-entry").digest()
    try:
        wrong = root_from_inclusion_proof(proof.index, proof.tree_size, bogus, list(proof.hashes))
    except CheckFailed:
        wrong = None
    check(wrong != root, "inclusion verifier accepted a wrong leaf hash")


def test_tracker(args, pb, inside):
    """The resident tracker, as the government app's back end calls it:
    the resident sees civil affairs' pull (made above, with an operator
    name) by department and purpose name, never the operator; a credit
    code is not a question it answers."""
    res, res_grpc = pb["resident_pb2"], pb["resident_pb2_grpc"]
    md = auth(args.pki, "resident-portal")
    with channel_for(args.addr, args.pki, "resident-portal") as ch:
        stub = res_grpc.ResidentServiceStub(ch)
        time.sleep(1)  # the subject index trails the durable log
        h = call(stub.MyAccessHistory, res.MyAccessHistoryRequest(id_number=field(inside, "id_number")), md)
        mine = [e for e in h.events if e.case_id == "PY-1"]
        check([e.case_id for e in h.events].count("PY-V2") == 1, "tracker: the v2 pull is listed too")
        check(len(mine) == 1, f"tracker: want civil affairs' pull PY-1 once, got {[e.case_id for e in h.events]}")
        e = mine[0]
        check(e.department_id == "civil-affairs" and e.department == "民政局",
              f"tracker: department {e.department_id!r} / {e.department!r}")
        check(e.purpose == "social-assistance" and e.purpose_name == "社会救助",
              f"tracker: purpose {e.purpose!r} / {e.purpose_name!r}")
        check("name" in e.fields, f"tracker: fields {list(e.fields)!r} lack name")
        check(b"py-client" not in h.SerializeToString(), "tracker: the operator's name leaks")
        check(h.HasField("receipt"), "tracker: the read carries its own receipt")
        expect_status(lambda: stub.MyAccessHistory(res.MyAccessHistoryRequest(id_number="91350100M000100Y43"),
                                                   metadata=md, timeout=CALL_TIMEOUT),
                      grpc.StatusCode.INVALID_ARGUMENT, "tracker asked about a credit code")
    step("resident tracker: the pull by department and purpose name, no operator; USCC refused")


def test_corrections(args, pb, inside):
    """A correction from civil affairs to public security, the source, and
    back: filed, in the source's queue, rejected with a reason, and the
    reporter sees the answer."""
    common, cor, cor_grpc = pb["common_pb2"], pb["correction_pb2"], pb["correction_pb2_grpc"]
    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        stub = cor_grpc.CorrectionServiceStub(ch)
        md = auth(args.pki, "civil-affairs")
        filed = call(stub.FileCorrection, cor.FileCorrectionRequest(
            context=common.PullContext(purpose="social-assistance", case_id="PY-9"),
            dataset="population", key=field(inside, "id_number"), field="phone",
            proposed_value="13900139000", evidence="called the resident"), md)
        check(filed.status == cor.CORRECTION_STATUS_OPEN and filed.source_department == "public-security",
              f"filed: status {filed.status}, source {filed.source_department!r}")
        expect_status(lambda: stub.FileCorrection(cor.FileCorrectionRequest(
            context=common.PullContext(purpose="social-assistance", case_id="PY-9"),
            dataset="population", key=ABSENT_ID, field="phone", proposed_value="13900139000",
            evidence="x"), metadata=md, timeout=CALL_TIMEOUT),
                      grpc.StatusCode.NOT_FOUND, "a correction of a record that does not exist")
    with channel_for(args.addr, args.pki, "public-security") as ch:
        stub = cor_grpc.CorrectionServiceStub(ch)
        md = auth(args.pki, "public-security")
        queue = call(stub.ListCorrections, cor.ListCorrectionsRequest(), md).corrections
        check(filed.id in [c.id for c in queue], "the correction is not in the source's queue")
        done = call(stub.AnswerCorrection, cor.AnswerCorrectionRequest(
            id=filed.id, rejected_reason="confirmed with the resident on file"), md)
        check(done.status == cor.CORRECTION_STATUS_REJECTED, f"answer: status {done.status}")
    with channel_for(args.addr, args.pki, "civil-affairs") as ch:
        stub = cor_grpc.CorrectionServiceStub(ch)
        mine = call(stub.ListMyCorrections, cor.ListMyCorrectionsRequest(), auth(args.pki, "civil-affairs"))
        got = [c for c in mine.corrections if c.id == filed.id]
        check(len(got) == 1 and got[0].answer == "confirmed with the resident on file",
              f"the reporter does not see the answer: {got!r}")
    step("corrections: filed, absent refused NOT_FOUND, in the source's queue, rejected, answer seen")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True, help="host:port of the gateway's gRPC listener")
    ap.add_argument("--pki", required=True, help="the gateway's DATA_DIR/pki")
    ap.add_argument("--proto-dir", required=True, help="the repository's proto/ directory")
    ap.add_argument("--persons-file", required=True, help="JSON with inside_with_phone and outside")
    args = ap.parse_args()

    out = compile_protos(args.proto_dir)
    pb = {m: load(m) for m in ("common_pb2", "population_pb2", "population_pb2_grpc",
                               "audit_pb2", "audit_pb2_grpc", "resident_pb2", "resident_pb2_grpc",
                               "correction_pb2", "correction_pb2_grpc",
                               "v2.population_pb2", "v2.population_pb2_grpc")}
    step(f"compiled protos with grpc_tools.protoc into {out}")
    inside, outside = load_persons(args.persons_file)

    try:
        self_test_inclusion_verifier()
        step("RFC 9162 inclusion verifier agrees with MTH/PATH on all trees up to 33 leaves")
        receipt = test_civil_affairs(args, pb, inside)
        test_street_office(args, pb, inside, outside)
        test_unauthenticated(args, pb, inside)
        test_reflection(args)
        test_inclusion(args, pb, receipt)
        test_tracker(args, pb, inside)
        test_corrections(args, pb, inside)
    except CheckFailed as e:
        print(f"FAIL {e}", file=sys.stderr, flush=True)
        print(f"checks: {check.passed} passed, 1 failed", flush=True)
        return 1
    except grpc.RpcError as e:
        traceback.print_exc()
        print(f"FAIL unexpected RPC error: {e.code()} {e.details()!r}", file=sys.stderr, flush=True)
        print(f"checks: {check.passed} passed, 1 failed", flush=True)
        return 1
    print(f"checks: {check.passed} passed, 0 failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
