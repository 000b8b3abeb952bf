"""`iqs digikam install|restore`: put a .pb where each digiKam version opens it."""
