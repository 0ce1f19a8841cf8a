"""Hydra entry points (collect, train, evaluate, ...): they wire configs to envs, demos and imitation."""
