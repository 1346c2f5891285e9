"""Training subpackage: data, priors, losses, train loop + distribution, evaluation, configs, experiments."""
