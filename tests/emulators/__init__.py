"""Local emulators of the push providers (FCM HTTP v1, APNs HTTP/2) for the tests and bench."""
