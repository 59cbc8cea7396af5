"""Server reflection as grpcio-reflection's own client sees it. That client speaks only
`grpc.reflection.v1alpha`, as grpcui, Postman and older grpcurl builds do, so this checks that
the server answers the older protocol version with the whole contract."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from conftest import Server


def describe(address: str) -> tuple[list[str], DescriptorPool]:
    channel = grpc.insecure_channel(address)
    database = ProtoReflectionDescriptorDatabase(channel)
    return list(database.get_services()), DescriptorPool(database)


def test_v1alpha_reflection_lists_and_describes_the_contract(server: Server) -> None:
    services, pool = describe(server.address)
    for name in ("autoj.v1.Judge", "autoj.v1.Scenarios", "grpc.health.v1.Health"):
        assert name in services, f"{name} missing from {services}"
    judge = pool.FindServiceByName("autoj.v1.Judge")
    methods = {m.name: m for m in judge.methods}
    assert {"Compare", "Critique", "Score", "Evaluate"} <= set(methods)
    compare = methods["Compare"]
    assert compare.input_type.full_name == "autoj.v1.CompareRequest"
    assert compare.output_type.full_name == "autoj.v1.JudgeEvent"
    fields = {f.name for f in compare.input_type.fields}
    assert {"query", "response_1", "response_2"} <= fields


def test_v1alpha_reflection_stays_open_without_an_api_key(keyed_server: Server) -> None:
    services, pool = describe(keyed_server.address)
    assert "autoj.v1.Judge" in services
    usage = pool.FindMessageTypeByName("autoj.v1.Usage")
    assert "cached_prompt_tokens" in {f.name for f in usage.fields}
