"""Data in and out: bulk import (commprefs, HubSpot and Mailchimp files) and streaming export.

- `formats.py`: the file formats and their columns; `importer.py`: reading, checking and applying a file
  in batches through the consent rules (consent/imports.py); `progress.py`: the CLI's progress lines
- `exporter.py`: an export as chunks of CSV or JSON lines, straight from the store's rows
- `service.py`: `Transfer`, the face the admin API and the CLI call
"""

from commprefs.transfer.service import Job, Transfer

__all__ = ["Job", "Transfer"]
