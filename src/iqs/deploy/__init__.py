"""Deployment: export/ (one Profile per deliverable), predict/ (`iqs predict`), digikam/ (`iqs digikam
install`), compat/ (the OpenCV release matrix)."""
