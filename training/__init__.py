"""The pack's own text-to-image model: generated shapes with captions, rendering, analysis and training."""
