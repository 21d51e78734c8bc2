"""The contact's side: the hosted preference page, unsubscribe pages and RFC 8058 one-click unsubscribe."""
