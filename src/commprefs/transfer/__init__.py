"""Data in and out: bulk import (commprefs, HubSpot and Mailchimp files) and streaming export."""
