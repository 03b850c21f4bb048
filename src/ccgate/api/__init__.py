"""HTTP routes, authentication, SSE plumbing and error rendering."""
