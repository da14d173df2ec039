"""Text encoder wrapper, facet labels and facet-aware supervised contrastive pre-training."""
