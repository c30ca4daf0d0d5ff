"""Sources of completions behind the one endpoint."""
