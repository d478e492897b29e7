"""Package data: the demo study config and the embedded BreastMNIST (see NOTICE)."""
