"""Attribution: how much each input contributes to one prediction.

This module owns three families of explanations, all computed in float64:

- the Shapley value of a cooperative game, exactly, by the subset formula or
  by averaging marginal contributions over every order in which the players
  can join (``shapley_values``, ``shapley_orders``);
- SHAP for a model: the players are input features (or groups of them, such
  as pixel blocks), the worth of a coalition S is the model's score with the
  features outside S set to a baseline; exactly over all 2**p coalitions
  (``shap_values``) or by sampling orders, with a standard error
  (``shap_sample``); every coalition is evaluated in batches, one model call
  per batch;
- gradient attributions from microgrid's backward pass: integrated gradients
  (midpoint rule along the straight path from the baseline) and
  gradient x input (``integrated_gradients``, ``gradient_x_input``).

Models are called with a microgrid Tensor batch of shape ``(m, *x.shape)``
and return one score per row (shape ``(m,)`` or ``(m, 1)``) or a row of class
scores (shape ``(m, k)``, with ``target`` naming the class).  SHAP only reads
the output (a Tensor, a Value or anything numpy can convert), so any
function of the batch works; the gradient methods need the output to be a
Tensor built from microgrid ops.
"""
import itertools
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ..core._engine import Value
from ..tensors._tensor import Tensor, tensor

__all__ = ["shapley_values", "shapley_orders", "shap_values", "shap_sample",
           "integrated_gradients", "gradient_x_input"]

# Enumeration limits: past these the exact methods take minutes and memory
# measured in gigabytes; the error says what to use instead.
MAX_ORDER_PLAYERS = 8          # 8! = 40320 orders
MAX_EXACT_PLAYERS = 20         # 2**20 coalitions


# ---------------------------------------------------------------------------
# The Shapley value of a table of coalition worths

def _subset_weights(n):
    """w[k] = k! (n - k - 1)! / n!, the weight of a coalition of size k in the
    subset formula; written as 1 / (n C(n-1, k)) so that it is one rounding
    of an exact integer ratio, whatever n."""
    return np.array([1.0 / (n * math.comb(n - 1, k)) for k in range(n)])


def _shapley_from_table(worth, n):
    """Shapley values from worth[s], the worth of the coalition whose members
    are the set bits of s (bit j: player j).  The subset formula:
    phi_j = sum over S not containing j of w(|S|) (v(S + j) - v(S))."""
    index = np.arange(1 << n, dtype=np.int64)
    size = np.bitwise_count(index) if hasattr(np, "bitwise_count") else np.array(
        [bin(s).count("1") for s in range(1 << n)])
    weights = _subset_weights(n)
    phi = np.empty(n)
    for j in range(n):
        without = index[(index >> j) & 1 == 0]
        phi[j] = np.sum(weights[size[without]] * (worth[without | (1 << j)] - worth[without]))
    return phi


# ---------------------------------------------------------------------------
# Games given as a function or a table

def _check_players(players):
    if isinstance(players, np.ndarray) and players.ndim == 1:
        players = players.tolist()
    if isinstance(players, (str, bytes)) or not isinstance(players, (list, tuple, range)):
        raise TypeError("players must be a list or tuple of player names, "
                        f"got {type(players).__name__}")
    players = tuple(players)
    if not players:
        raise ValueError("players is empty: a game needs at least one player")
    try:
        distinct = len(set(players)) == len(players)
    except TypeError:
        raise TypeError("players must be hashable (names or numbers)") from None
    if not distinct:
        raise ValueError(f"players must be distinct, got {list(players)}")
    return players


def _worth_function(game, players):
    """A function coalition (frozenset) -> float from a callable or a mapping."""
    if isinstance(game, Mapping):
        known = frozenset(players)
        table = {}
        for key, worth in game.items():
            try:
                # a bare player name is the coalition of that player alone
                members = frozenset([key]) if key in known else frozenset(key)
            except TypeError:
                raise TypeError(f"game's keys must be coalitions (iterables of players), got {key!r}") from None
            unknown = members - known
            if unknown:
                raise ValueError(f"game names a coalition with players not in players: {sorted(map(str, unknown))}")
            if members in table and table[members] != worth:
                raise ValueError(f"game gives two worths for the coalition {sorted(map(str, members))}")
            table[members] = worth

        def worth(coalition):
            if coalition not in table:
                if not coalition:
                    return 0.0          # v(empty set) = 0 unless given
                raise ValueError(f"game has no worth for the coalition {sorted(map(str, coalition))}")
            return table[coalition]
        return worth
    if not callable(game):
        raise TypeError("game must be a function of a coalition (a frozenset of players) or a mapping "
                        f"from coalitions to numbers, got {type(game).__name__}")
    return game


def _as_number(worth, coalition):
    if isinstance(worth, Value):
        worth = worth.data
    elif isinstance(worth, np.ndarray) and worth.shape == () and worth.dtype.kind in "iuf":
        worth = worth.item()
    if isinstance(worth, bool) or not isinstance(worth, numbers.Real):
        raise TypeError(f"the game's worth of {sorted(map(str, coalition))} must be a number, "
                        f"got {type(worth).__name__}")
    return float(worth)


def _game_table(game, players):
    """worth[s] for every coalition s (a bit mask over players), each
    coalition evaluated once."""
    worth_of = _worth_function(game, players)
    n = len(players)
    worth = np.empty(1 << n)
    for s in range(1 << n):
        coalition = frozenset(players[j] for j in range(n) if s >> j & 1)
        worth[s] = _as_number(worth_of(coalition), coalition)
    return worth


def shapley_orders(game, players):
    """Every order in which the players can join, with each player's marginal
    contribution in it: a list of ``(order, contributions)`` where ``order``
    is a tuple of players and ``contributions[j]`` is what ``players[j]``
    adds to the coalition of those before it, v(S + j) - v(S).  The Shapley
    value is the mean of the contributions over the n! orders.

    ``game`` is a function of a frozenset of players, or a mapping from
    coalitions (any iterable of players) to their worth, where a missing
    empty coalition is worth 0.  At most 8 players (8! orders).
    """
    players = _check_players(players)
    n = len(players)
    if n > MAX_ORDER_PLAYERS:
        raise ValueError(f"players: {n} players have {math.factorial(n)} orders; enumerating orders "
                         f"stops at {MAX_ORDER_PLAYERS}: use shapley_values(method='subsets')")
    worth = _game_table(game, players)
    table = []
    for order in itertools.permutations(range(n)):
        contributions = np.empty(n)
        s = 0
        for j in order:
            contributions[j] = worth[s | 1 << j] - worth[s]
            s |= 1 << j
        table.append((tuple(players[j] for j in order), contributions))
    return table


def shapley_values(game, players, method="subsets"):
    """The Shapley value of each player of a cooperative game, as a float64
    array in the order of ``players``.

    ``game`` is a function of a frozenset of players returning its worth, or
    a mapping from coalitions (any iterable of players) to their worth (a
    missing empty coalition is worth 0).  ``method='subsets'`` uses
    phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! (v(S + i) - v(S))
    (up to 20 players); ``method='orders'`` averages the marginal
    contributions over every order (up to 8 players).  Either way the game
    is evaluated once per coalition.

        >>> shapley_values({(): 0, ("Lisa",): 30, ("David",): 20, ("Lisa", "David"): 40},
        ...                ["Lisa", "David"])
        array([25., 15.])
    """
    if method not in ("subsets", "orders"):
        raise ValueError(f"method must be 'subsets' or 'orders', got {method!r}")
    players = _check_players(players)
    if method == "orders":
        table = shapley_orders(game, players)
        return np.mean([c for _, c in table], axis=0)
    if len(players) > MAX_EXACT_PLAYERS:
        raise ValueError(f"players: {len(players)} players have 2**{len(players)} coalitions; the exact "
                         f"value stops at {MAX_EXACT_PLAYERS}")
    return _shapley_from_table(_game_table(game, players), len(players))


# ---------------------------------------------------------------------------
# Models: checking what the caller passed

def _check_model(model):
    if not callable(model):
        raise TypeError("model must be callable (a microgrid Module or a function of a Tensor batch), "
                        f"got {type(model).__name__}")


def _check_input(x):
    if isinstance(x, Tensor):
        x = x.data
    elif isinstance(x, Value):
        x = x.data
    try:
        a = np.asarray(x)
    except Exception:
        raise TypeError(f"x must be an array of numbers, got {type(x).__name__}") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"x must be an array of real numbers, got dtype {a.dtype}")
    a = np.array(a, dtype=np.float64)      # a copy: the caller's array stays untouched
    if a.size == 0:
        raise ValueError(f"x has no features (shape {a.shape}): there are no players")
    if not np.all(np.isfinite(a)):
        raise ValueError("x must be finite (no NaN or inf)")
    return a


def _check_baseline(baseline, x):
    if baseline is None:
        return np.zeros_like(x)
    if isinstance(baseline, (Tensor, Value)):
        baseline = baseline.data
    if isinstance(baseline, bool):
        raise TypeError("baseline must be a number or an array of x's shape, got bool")
    try:
        b = np.asarray(baseline)
    except Exception:
        raise TypeError(f"baseline must be a number or an array, got {type(baseline).__name__}") from None
    if b.dtype.kind not in "iuf":
        raise TypeError(f"baseline must be real numbers, got dtype {b.dtype}")
    b = b.astype(np.float64)
    if b.ndim == 0:
        b = np.full_like(x, float(b))
    elif b.shape != x.shape:
        raise ValueError(f"baseline must be a number or have x's shape {x.shape}, got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("baseline must be finite (no NaN or inf)")
    return b


def _check_groups(groups, x):
    """(player of each feature in 0..p-1, p).  Without groups every feature
    is a player; with them, features sharing a label form one player, in
    the order of np.unique(groups)."""
    if groups is None:
        return np.arange(x.size), x.size
    g = np.asarray(groups.data if isinstance(groups, Tensor) else groups)
    if g.dtype.kind not in "iu":
        raise TypeError(f"groups must be an array of integer labels, got dtype {g.dtype}")
    if g.shape != x.shape:
        raise ValueError(f"groups must have x's shape {x.shape}, got shape {g.shape}")
    labels, player = np.unique(g.reshape(-1), return_inverse=True)
    return player.reshape(-1), len(labels)


def _check_int(value, name, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_target(target):
    if target is None:
        return None
    return _check_int(target, "target", 0)


def _select(scores, target, rows):
    """One score per row from the model's output array."""
    if scores.ndim == 2 and scores.shape[0] == rows:
        k = scores.shape[1]
        if target is None:
            if k != 1:
                raise ValueError(f"model returns {k} scores per input: pass target=<class index>")
            return scores[:, 0]
        if target >= k:
            raise ValueError(f"target must be below the {k} scores the model returns, got {target}")
        return scores[:, target]
    if scores.shape == (rows,):
        if target not in (None, 0):
            raise ValueError(f"model returns one score per input: target must be None or 0, got {target}")
        return scores
    raise ValueError(f"model must return one score per input, shape ({rows},) or ({rows}, k), "
                     f"for a batch of {rows}; got shape {scores.shape}")


def _scores(model, batch, target):
    out = model(tensor(batch))
    data = out.data if isinstance(out, (Tensor, Value)) else out
    try:
        scores = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"model must return numbers (a Tensor or an array), got {type(out).__name__}") from None
    return _select(scores, target, len(batch))


# ---------------------------------------------------------------------------
# SHAP

def _coalition_scores(model, x, baseline, player, masks, target, batch_size):
    """The model's score for each coalition (a row of ``masks``, one column
    per player): the features of absent players are set to the baseline.
    Rows go through the model ``batch_size`` at a time."""
    flat_x, flat_b = x.reshape(-1), baseline.reshape(-1)
    out = np.empty(len(masks))
    for start in range(0, len(masks), batch_size):
        present = masks[start:start + batch_size][:, player]          # (rows, features)
        batch = np.where(present, flat_x, flat_b).reshape((len(present),) + x.shape)
        out[start:start + batch_size] = _scores(model, batch, target)
    return out


def _shaped(phi, x, groups):
    # one value per feature comes back in x's shape; one per group stays flat
    return phi.reshape(x.shape) if groups is None else phi


def shap_values(model, x, baseline=None, *, groups=None, target=None, batch_size=4096):
    """Exact SHAP values of ``model`` at ``x``: the Shapley values of the
    game v(S) = model's score at x with the features outside S set to
    ``baseline`` (a number or an array of x's shape; default 0).

    The players are the features of ``x`` (the result then has x's shape),
    or, with ``groups`` (integer labels of x's shape), the groups of features
    sharing a label, in the order of ``np.unique(groups)`` (the result is then
    one value per group).  All 2**p coalitions are evaluated, ``batch_size``
    rows per model call, so p is at most 20.  The values add up to
    v(all) - v(none) = score(x) - score(baseline).
    """
    _check_model(model)
    x = _check_input(x)
    baseline = _check_baseline(baseline, x)
    player, p = _check_groups(groups, x)
    target = _check_target(target)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if p > MAX_EXACT_PLAYERS:
        raise ValueError(f"exact SHAP evaluates all 2**p coalitions; {p} players is too many (at most "
                         f"{MAX_EXACT_PLAYERS}): pass groups= to merge features, or use shap_sample")
    coalitions = np.arange(1 << p, dtype=np.int64)
    masks = ((coalitions[:, None] >> np.arange(p)) & 1).astype(bool)
    worth = _coalition_scores(model, x, baseline, player, masks, target, batch_size)
    return _shaped(_shapley_from_table(worth, p), x, groups)


def shap_sample(model, x, baseline=None, *, groups=None, target=None, permutations=100, seed=None,
                batch_size=4096):
    """SHAP values estimated by sampling orders: returns ``(phi, stderr)``.

    Each of ``permutations`` random orders of the players adds them one at a
    time to the coalition, starting from the baseline, and records each
    player's marginal contribution; ``phi`` is their mean over the orders and
    ``stderr`` its standard error (sample standard deviation / sqrt(orders)).
    Players, ``baseline``, ``groups`` and ``target`` are as in
    ``shap_values``.  Every order's contributions add up to
    score(x) - score(baseline), so ``phi`` does too, whatever the sample.
    Coalitions go through the model ``batch_size`` rows at a time;
    ``seed`` seeds numpy's default_rng.
    """
    _check_model(model)
    x = _check_input(x)
    baseline = _check_baseline(baseline, x)
    player, p = _check_groups(groups, x)
    target = _check_target(target)
    permutations = _check_int(permutations, "permutations", 2, 10 ** 6)
    batch_size = _check_int(batch_size, "batch_size", 1)
    rng = np.random.default_rng(seed)
    # the empty and the full coalition open and close every order: evaluated once
    ends = _coalition_scores(model, x, baseline, player, np.array([[False] * p, [True] * p]),
                             target, batch_size)
    contributions = np.empty((permutations, p))
    # whole orders per chunk, about batch_size coalitions per model call
    per_chunk = max(1, batch_size // max(p - 1, 1))
    steps = np.arange(1, p)
    # all orders drawn up front: the estimate depends on the seed, not on batch_size
    all_orders = np.argsort(rng.random((permutations, p)), axis=1)
    for start in range(0, permutations, per_chunk):
        k = min(per_chunk, permutations - start)
        orders = all_orders[start:start + k]
        position = np.argsort(orders, axis=1)                   # where each player joins
        # the coalition after t players have joined: those in positions < t
        masks = (position[:, None, :] < steps[None, :, None]).reshape(-1, p)
        inner = _coalition_scores(model, x, baseline, player, masks, target, batch_size)
        worth = np.empty((k, p + 1))
        worth[:, 0], worth[:, p] = ends
        worth[:, 1:p] = inner.reshape(k, p - 1)
        gains = np.diff(worth, axis=1)                          # gains[:, t]: what orders[:, t] adds
        np.put_along_axis(contributions[start:start + k], orders, gains, axis=1)
    phi = contributions.mean(axis=0)
    stderr = contributions.std(axis=0, ddof=1) / math.sqrt(permutations)
    return _shaped(phi, x, groups), _shaped(stderr, x, groups)


# ---------------------------------------------------------------------------
# Gradient attributions

def _frozen_parameters(model):
    """The model's parameters that collect gradients, so that they can be
    switched off while attributions run: backward then skips them (less
    work) and leaves the caller's accumulated .grad untouched."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return []
    try:
        return [q for q in parameters() if isinstance(q, (Tensor, Value)) and q.requires_grad]
    except Exception:
        return []


def _input_gradients(model, points, target, batch_size):
    """d score / d input at each row of ``points``, by microgrid's backward:
    one backward pass per batch (rows do not interact, so the gradient of
    the summed scores is each row's own gradient)."""
    frozen = _frozen_parameters(model)
    for q in frozen:
        q.requires_grad = False
    try:
        grads = np.empty_like(points)
        for start in range(0, len(points), batch_size):
            chunk = tensor(points[start:start + batch_size], requires_grad=True)
            out = model(chunk)
            if not isinstance(out, Tensor):
                raise TypeError("the gradient methods need the model's output to be a microgrid Tensor "
                                f"(built from microgrid ops), got {type(out).__name__}")
            rows = chunk.shape[0]
            _select(np.asarray(out.data), target, rows)          # checks the output's shape
            seed = np.zeros(out.shape)
            if out.data.ndim == 2:
                seed[:, 0 if target is None else target] = 1.0
            else:
                seed[:] = 1.0
            if out.requires_grad:
                out.backward(seed)
                grads[start:start + rows] = chunk.grad
            else:                       # the score does not depend on the input
                grads[start:start + rows] = 0.0
        return grads
    finally:
        for q in frozen:
            q.requires_grad = True


def integrated_gradients(model, x, baseline=None, *, target=None, steps=64, batch_size=256):
    """Integrated gradients of ``model``'s score at ``x``, with x's shape:
    (x - baseline) times the average gradient along the straight path from
    ``baseline`` (a number or an array of x's shape; default 0) to ``x``.

    The path integral is the midpoint rule with ``steps`` points
    (alpha = (k + 1/2) / steps), whose gradients come from microgrid's
    backward, ``batch_size`` points per pass.  The attributions add up to
    score(x) - score(baseline) up to the rule's error: O(1/steps**2) for a
    smooth model, O(1/steps) where the path crosses ReLU kinks.  The
    model's output must be a Tensor; the .grad of a Module's parameters is
    left as it was.
    """
    _check_model(model)
    x = _check_input(x)
    baseline = _check_baseline(baseline, x)
    target = _check_target(target)
    steps = _check_int(steps, "steps", 1, 10 ** 6)
    batch_size = _check_int(batch_size, "batch_size", 1)
    alphas = (np.arange(steps) + 0.5) / steps
    delta = x - baseline
    points = baseline[None] + alphas.reshape((steps,) + (1,) * x.ndim) * delta[None]
    grads = _input_gradients(model, points, target, batch_size)
    return delta * grads.mean(axis=0)


def gradient_x_input(model, x, baseline=None, *, target=None):
    """The gradient of ``model``'s score at ``x`` times (x - baseline)
    (baseline a number or an array of x's shape; default 0, which gives the
    usual gradient x input), with x's shape.  Exact for a linear model,
    where it equals the SHAP values; a first-order guess elsewhere.  The
    .grad of a Module's parameters is left as it was.
    """
    _check_model(model)
    x = _check_input(x)
    baseline = _check_baseline(baseline, x)
    target = _check_target(target)
    grads = _input_gradients(model, x[None], target, 1)
    return (x - baseline) * grads[0]
