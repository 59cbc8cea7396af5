"""Example: judge two answers with a running autoj server, printing the critique as it
streams, then score candidates and classify the query.

    python examples/judge.py [ADDRESS] [--api-key KEY]
    (from clients/python, after scripts/test-python.sh or `pip install clients/python`
    with generate.py run; start a server with scripts/up)
"""

import argparse
import sys

from autoj_client import AutojError, Client, Options, messages

WINNERS = {
    messages.WINNER_RESPONSE_1: "Response 1",
    messages.WINNER_RESPONSE_2: "Response 2",
    messages.WINNER_TIE: "Tie",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", nargs="?", default="127.0.0.1:50051")
    parser.add_argument("--api-key")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    query = "What is the capital of France?"
    options = Options(max_new_tokens=args.max_new_tokens)
    with Client(args.address, api_key=args.api_key, timeout=600) as client:
        try:
            for event in client.compare_stream(query, "Paris.", "Lyon, I believe.", options=options):
                if isinstance(event, messages.Accepted):
                    print(f"[{event.request_id}] scenario {event.scenario or '-'}, model {event.model}")
                elif isinstance(event, messages.CritiqueDelta):
                    print(event.text, end="", flush=True)
                elif isinstance(event, messages.Verdict):
                    v = event.pairwise
                    print(f"\nverdict: {WINNERS.get(v.winner, 'none')} "
                          f"(p1 {v.p_response_1:.2f}, p2 {v.p_response_2:.2f}, tie {v.p_tie:.2f})")
                elif isinstance(event, messages.Usage):
                    print(f"{event.prompt_tokens} prompt + {event.completion_tokens} generated tokens")

            scores = client.score(query, ["Paris.", "Marseille.", "It is Paris, on the Seine."], options=options)
            for s in scores.scores:
                print(f"candidate {s.index}: expected rating {s.verdict.expected_rating:.2f}")
            print(f"best: candidate {scores.best_index}")

            for s in client.classify([query], top_k=3)[0]:
                print(f"{s.scenario} ({s.group or 'no group'}): {s.probability:.2f}")
        except AutojError as error:
            print(f"autoj error {error.code.name}: {error.details}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
