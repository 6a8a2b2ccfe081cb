"""Running the secure-sum protocols inside existing federated-learning stacks (Flower)."""
