"""Built-in declarations. Models state what they are; they never import engines."""
