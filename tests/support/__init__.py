"""Helpers the tests share: real servers as subprocesses, and a GraphQL client."""
