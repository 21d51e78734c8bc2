"""commprefs: a self-hosted communication-preferences service that speaks HubSpot's API."""

__version__ = "0.1.0"
