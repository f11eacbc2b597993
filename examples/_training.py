"""Shared by the example scripts that train a digits classifier (problems 10,
11 and 12): one training loop, so the three train the same way."""
import microgrid as mg
import microgrid.functional as F
import microgrid.optim as optim


def train_classifier(model, X, y, epochs, rng, lr=0.01, batch_size=64):
    """Adam on cross-entropy over mini-batches of (X, y) shuffled by numpy
    Generator ``rng`` (y: class indices, as PyTorch's cross_entropy takes
    them); returns the model."""
    opt = optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(mg.tensor(X[idx])), mg.tensor(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
