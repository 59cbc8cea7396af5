"""The typed wrapper over the generated stubs: one method per RPC, keyword options instead of
nested request messages, streams as iterators of events, and every gRPC failure raised as
:class:`AutojError` carrying its status code."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from ._proto import autoj_pb2 as pb
from ._proto import autoj_pb2_grpc as pb_grpc

# The events of a Compare/Critique stream, in the order the server sends them: one
# Accepted, CritiqueDelta*, one Verdict, one Usage (per order with swap_check), then
# Consistency with swap_check.
Event = Union[pb.Accepted, pb.CritiqueDelta, pb.Verdict, pb.Usage, pb.Consistency]

_LANGUAGES = {None: pb.LANGUAGE_AUTO, "auto": pb.LANGUAGE_AUTO, "en": pb.LANGUAGE_EN, "zh": pb.LANGUAGE_ZH}
_TRUNCATION = {"auto": pb.TRUNCATION_AUTO, "refuse": pb.TRUNCATION_REFUSE}

T = TypeVar("T")


class AutojError(Exception):
    """A call failed: `code` is the gRPC status (e.g. ``grpc.StatusCode.INVALID_ARGUMENT``),
    `details` the server's message (it names the offending field)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "AutojError":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


@dataclasses.dataclass(frozen=True)
class Options:
    """Judging options (all optional; unset means Auto-J's own settings: greedy, 1,024
    new tokens, language detected from the query, truncation from the middle)."""

    language: Optional[str] = None
    scenario: str = ""
    swap_check: bool = False
    max_new_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    stop: Sequence[str] = ()
    truncation: str = "auto"

    def to_proto(self) -> pb.JudgeOptions:
        if self.language not in _LANGUAGES:
            raise ValueError(f"language must be one of en, zh, auto or None, not {self.language!r}")
        if self.truncation not in _TRUNCATION:
            raise ValueError(f"truncation must be 'auto' or 'refuse', not {self.truncation!r}")
        generation = pb.GenerationOptions(stop=list(self.stop))
        for field in ("max_new_tokens", "temperature", "top_p", "seed"):
            value = getattr(self, field)
            if value is not None:
                setattr(generation, field, value)
        return pb.JudgeOptions(
            language=_LANGUAGES[self.language],
            scenario=self.scenario,
            swap_check=self.swap_check,
            generation=generation,
            truncation=_TRUNCATION[self.truncation],
        )


@dataclasses.dataclass
class Judgment:
    """A whole Compare/Critique stream gathered: the critique text and the verdict of each
    order (index 0: as sent; 1: swapped, with swap_check), and the consistency event."""

    accepted: List[pb.Accepted] = dataclasses.field(default_factory=list)
    critiques: List[str] = dataclasses.field(default_factory=list)
    verdicts: List[pb.Verdict] = dataclasses.field(default_factory=list)
    usages: List[pb.Usage] = dataclasses.field(default_factory=list)
    consistency: Optional[pb.Consistency] = None

    @property
    def critique(self) -> str:
        """The critique of the order sent."""
        return self.critiques[0] if self.critiques else ""

    @property
    def verdict(self) -> pb.Verdict:
        """The verdict of the order sent."""
        return self.verdicts[0]

    def add(self, event: Event) -> None:
        order = getattr(event, "order", 0)
        if isinstance(event, pb.Accepted):
            self.accepted.append(event)
            self.critiques.append("")
        elif isinstance(event, pb.CritiqueDelta):
            self.critiques[order] += event.text
        elif isinstance(event, pb.Verdict):
            self.verdicts.append(event)
        elif isinstance(event, pb.Usage):
            self.usages.append(event)
        else:
            self.consistency = event


def _events(stream: Iterable[pb.JudgeEvent]) -> Iterator[Event]:
    """The active member of each JudgeEvent, failures raised as AutojError."""
    try:
        for message in stream:
            kind = message.WhichOneof("event")
            if kind is not None:
                yield getattr(message, kind)
    except grpc.RpcError as error:
        raise AutojError.from_rpc(error) from None


def _results(stream: Iterable[T]) -> Iterator[T]:
    try:
        yield from stream
    except grpc.RpcError as error:
        raise AutojError.from_rpc(error) from None


class Client:
    """A connection to an autoj server (the router, or one judge replica for `Judge`).

    >>> with Client("127.0.0.1:50051") as client:
    ...     for event in client.compare_stream(query, first, second):
    ...         ...

    `api_key` is sent as ``authorization: Bearer <key>``; `root_certificates` (PEM bytes)
    or ``tls=True`` (system roots) switch to TLS. `timeout` (seconds) bounds every call
    unless the call names its own; the server sees it as the gRPC deadline.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: Optional[str] = None,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        timeout: Optional[float] = None,
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        if channel is None:
            if tls or root_certificates is not None:
                credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
                channel = grpc.secure_channel(target, credentials)
            else:
                channel = grpc.insecure_channel(target)
        self._channel = channel
        self._judge = pb_grpc.JudgeStub(channel)
        self._scenarios = pb_grpc.ScenariosStub(channel)
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: object, timeout: Optional[float]) -> T:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise AutojError.from_rpc(error) from None

    # Judge --------------------------------------------------------------------------

    def compare_stream(
        self, query: str, response_1: str, response_2: str, *,
        options: Optional[Options] = None, timeout: Optional[float] = None,
    ) -> Iterator[Event]:
        """Pairwise judgment as it streams: Accepted, CritiqueDelta*, Verdict, Usage."""
        request = pb.CompareRequest(
            query=query, response_1=response_1, response_2=response_2,
            options=(options or Options()).to_proto(),
        )
        return _events(self._call(self._judge.Compare, request, timeout))

    def compare(
        self, query: str, response_1: str, response_2: str, *,
        options: Optional[Options] = None, timeout: Optional[float] = None,
    ) -> Judgment:
        """Pairwise judgment, gathered: ``.verdict.pairwise.winner`` is the outcome."""
        judgment = Judgment()
        for event in self.compare_stream(query, response_1, response_2, options=options, timeout=timeout):
            judgment.add(event)
        return judgment

    def critique_stream(
        self, query: str, response: str, *,
        options: Optional[Options] = None, timeout: Optional[float] = None,
    ) -> Iterator[Event]:
        """Single-response judgment as it streams; the verdict is a rating 1-10."""
        request = pb.CritiqueRequest(query=query, response=response, options=(options or Options()).to_proto())
        return _events(self._call(self._judge.Critique, request, timeout))

    def critique(
        self, query: str, response: str, *,
        options: Optional[Options] = None, timeout: Optional[float] = None,
    ) -> Judgment:
        """Single-response judgment, gathered: ``.verdict.single.rating``."""
        judgment = Judgment()
        for event in self.critique_stream(query, response, options=options, timeout=timeout):
            judgment.add(event)
        return judgment

    def score(
        self, query: str, responses: Sequence[str], *,
        options: Optional[Options] = None, timeout: Optional[float] = None,
    ) -> pb.ScoreResponse:
        """Best-of-N: every candidate rated; ``best_index`` has the highest expected rating."""
        request = pb.ScoreRequest(query=query, responses=list(responses), options=(options or Options()).to_proto())
        return self._call(self._judge.Score, request, timeout)

    def evaluate(
        self, items: Iterable[pb.EvaluateItem], *, timeout: Optional[float] = None,
    ) -> Iterator[pb.EvaluateResult]:
        """Bulk judging: results as each item finishes (not in order); a failed item has a
        non-zero ``error_code`` instead of failing the stream. Build items with
        :func:`compare_item` / :func:`critique_item`."""
        return _results(self._call(self._judge.Evaluate, iter(items), timeout))

    # Scenarios ----------------------------------------------------------------------

    def classify(
        self, queries: Sequence[str], *, top_k: int = 3, timeout: Optional[float] = None,
    ) -> List[List[pb.ScenarioScore]]:
        """The top-k scenarios of each query, most probable first."""
        response = self._call(
            self._scenarios.Classify, pb.ClassifyRequest(queries=list(queries), top_k=top_k), timeout
        )
        return [list(result.top) for result in response.results]

    def list_scenarios(self, *, timeout: Optional[float] = None) -> List[pb.Scenario]:
        """Every scenario the server knows, with its group and description."""
        return list(self._call(self._scenarios.List, pb.ListScenariosRequest(), timeout).scenarios)

    def get_criteria(self, scenario: str, *, timeout: Optional[float] = None) -> List[pb.Criterion]:
        """The criteria a scenario is judged by: inherited sets first, then its own."""
        request = pb.GetCriteriaRequest(scenario=scenario)
        return list(self._call(self._scenarios.GetCriteria, request, timeout).criteria)


def compare_item(
    id: str, query: str, response_1: str, response_2: str, *, options: Optional[Options] = None,
) -> pb.EvaluateItem:
    """One pairwise item of :meth:`Client.evaluate`."""
    request = pb.CompareRequest(
        query=query, response_1=response_1, response_2=response_2,
        options=(options or Options()).to_proto(),
    )
    return pb.EvaluateItem(id=id, compare=request)


def critique_item(id: str, query: str, response: str, *, options: Optional[Options] = None) -> pb.EvaluateItem:
    """One single-response item of :meth:`Client.evaluate`."""
    request = pb.CritiqueRequest(query=query, response=response, options=(options or Options()).to_proto())
    return pb.EvaluateItem(id=id, critique=request)
