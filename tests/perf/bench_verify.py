"""Benchmark Verifier.verify against a bare jwt.decode with the same cached key.

Not a test (pytest collects test_*.py only). Run:

    .venv/bin/python tests/perf/bench_verify.py [--tokens 2000] [--seconds 3] [--alg ES256 ...]

For each algorithm it signs N distinct access tokens, then alternates timed
rounds of the two contenders over the same tokens and reports the best round
of each (the least disturbed by other load) and their ratio. The target is a
ratio of at least 0.90.
"""

import argparse
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authserver.verify import Verifier

ISSUER = "https://auth.example.com"
API = "integration-api"
ROUNDS = 6
TARGET_RATIO = 0.90


def generate_key(alg):
    """A fresh private key for alg."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def claims_for(index, now):
    """A full authserver claim set, distinct per index."""
    return {
        "iss": ISSUER,
        "sub": f"tu-{index}",
        "aud": ["integration-api", "webhooks", "graphql"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": uuid.uuid4().hex,
        "client_id": f"apitoken-{index}",
        "scope": "read write",
        "instanceUrl": "https://app.example.com",
        "region": "eu",
        "principal": {
            "id": f"tu-{index}",
            "username": f"bot-{index}",
            "role": "ACCOUNTUSER",
            "status": "ACTIVE",
            "technicalUser": True,
            "account": {"id": "acc-1", "name": "Acme"},
            "permission": {
                "id": f"perm-{index}",
                "workspaceId": "ws-1",
                "workspaceName": "acme-prod",
                "role": "MEMBER",
                "status": "ACTIVE",
            },
        },
    }


def setup(alg, count):
    """Return (verifier, pre-parsed PyJWK, tokens) for alg."""
    private_key = generate_key(alg)
    kid = f"bench-{alg}"
    jwk = jwt.get_algorithm_by_name(alg).to_jwk(private_key.public_key(), as_dict=True)
    verifier = Verifier(ISSUER, API, keys={"keys": [{**jwk, "kid": kid, "alg": alg, "use": "sig"}]})
    headers = {"typ": "at+jwt", "kid": kid}
    now = int(time.time())
    tokens = [
        jwt.encode(claims_for(i, now), private_key, algorithm=alg, headers=headers)
        for i in range(count)
    ]
    return verifier, verifier.keys.get(kid), tokens


def rate(function, tokens, seconds):
    """Verifications per second of function over tokens, looping for about `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for token in tokens:
            function(token)
        done += len(tokens)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def bench(alg, count, seconds):
    """Time both contenders for alg and print their best rates and the ratio."""
    verifier, key, tokens = setup(alg, count)
    algorithms = [alg]

    def bare(token):
        return jwt.decode(token, key, algorithms=algorithms, audience=API, issuer=ISSUER)

    bare(tokens[0])
    verifier.verify(tokens[0])  # warm up both, and check the tokens are good
    best_bare = best_verify = 0.0
    per_round = seconds / ROUNDS
    for _ in range(ROUNDS):
        best_bare = max(best_bare, rate(bare, tokens, per_round))
        best_verify = max(best_verify, rate(verifier.verify, tokens, per_round))
    ratio = best_verify / best_bare
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"{alg:6} bare jwt.decode {best_bare:9.0f}/s   Verifier.verify {best_verify:9.0f}/s"
        f"   ratio {ratio:.3f}  {verdict}"
    )
    return ratio


def main():
    """Parse arguments and run the benchmark for each algorithm."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000, help="distinct tokens per algorithm")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per contender")
    parser.add_argument("--alg", action="append", choices=["ES256", "RS256", "EdDSA"])
    args = parser.parse_args()
    print(f"{args.tokens} tokens per algorithm, {args.seconds:g} s per contender, best of {ROUNDS}")
    for alg in args.alg or ["ES256", "RS256", "EdDSA"]:
        bench(alg, args.tokens, args.seconds)


if __name__ == "__main__":
    main()
