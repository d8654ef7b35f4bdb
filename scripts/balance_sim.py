#!/usr/bin/env python3
"""A discrete-event simulation of benches/balance.rs's setup, to compare
choice rules without the noise of real processes: three providers answering
in 5, 20 and 50 ms with 4 slots each (FIFO queue beyond), 16 closed-loop
clients, 0.5 ms of overhead per request, 20 s simulated (the first 2 s not
counted). The cost is the one src/balance uses: peak-EWMA of the observed
latency (2 s decay) x (requests in flight + 1); a provider not measured yet
counts as fast as the fastest measured. Rules:

  power_of_two  the cheaper of two drawn at random (either within 20%)
  least_cost    the cheapest of all (a random one within 20% of it)
  round_robin   in turn

    python3 scripts/balance_sim.py

Prints answers/s, p50 and p99 (ms) and each provider's share. Standard
library only.
"""

import heapq
import math
import random

TIE = 0.2
DECAY_MS = 2000.0


def simulate(rule, base=(5, 20, 50), slots=4, clients=16, total_ms=20000.0, overhead=0.5, seed=1):
    rnd = random.Random(seed)
    n = len(base)
    in_flight, busy = [0] * n, [0] * n
    queue = [[] for _ in range(n)]
    latency, measured_at = [None] * n, [0.0] * n
    events, samples, share = [], [], [0] * n
    turn = [-1]

    def cost(i):
        known = [x for x in latency if x is not None]
        l = latency[i] if latency[i] is not None else (min(known) if known else 1.0)
        return l * (in_flight[i] + 1)

    def choose():
        if rule == "round_robin":
            turn[0] = (turn[0] + 1) % n
            return turn[0]
        if rule == "power_of_two":
            a = rnd.randrange(n)
            b = (a + 1 + rnd.randrange(n - 1)) % n
            ca, cb = cost(a), cost(b)
            return b if cb * (1 + TIE) < ca else a
        costs = [cost(i) for i in range(n)]
        cheapest = min(costs)
        return rnd.choice([i for i in range(n) if costs[i] <= cheapest * (1 + TIE)])

    def send(now):
        i = choose()
        in_flight[i] += 1
        heapq.heappush(events, (now + overhead / 2, "arrive", i, now))

    for _ in range(clients):
        send(0.0)
    while events:
        t, kind, i, sent = heapq.heappop(events)
        if t > total_ms:
            break
        if kind == "arrive":
            if busy[i] < slots:
                busy[i] += 1
                heapq.heappush(events, (t + base[i], "done", i, sent))
            else:
                queue[i].append(sent)
            continue
        busy[i] -= 1
        if queue[i]:
            busy[i] += 1
            heapq.heappush(events, (t + base[i], "done", i, queue[i].pop(0)))
        end = t + overhead / 2
        in_flight[i] -= 1
        took = end - sent
        if latency[i] is None or took >= latency[i]:
            latency[i] = took
        else:
            w = math.exp(-(end - measured_at[i]) / DECAY_MS)
            latency[i] = latency[i] * w + took * (1 - w)
        measured_at[i] = end
        if t > 2000:
            samples.append(took)
            share[i] += 1
        send(end)
    samples.sort()
    return (len(samples) / ((total_ms - 2000) / 1000), samples[len(samples) // 2],
            samples[int(len(samples) * 0.99)], [100 * s / len(samples) for s in share])


if __name__ == "__main__":
    print("| rule | answers/s | p50 ms | p99 ms | share 5 / 20 / 50 ms |")
    print("|---|---|---|---|---|")
    for rule in ("round_robin", "power_of_two", "least_cost"):
        rate, p50, p99, share = simulate(rule)
        print(f"| {rule} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {' / '.join(f'{s:.1f}%' for s in share)} |")
