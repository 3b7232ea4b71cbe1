"""The user service: accounts, password hashing, permissions and roles.

Layers: `api` (HTTP) -> `service` (rules) -> `repository` (persistence). Only `api` and `app`
import FastAPI.
"""
