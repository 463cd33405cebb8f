"""The sampled-vs-ideal lab, Qt-free: ``engine`` (exact token trees, sampled answers, concept
runs), ``records`` (the typed params, records and summaries its runs yield and store),
``concepts`` (the concept set and its CSV), ``numbers`` (reading numbers from answers),
``stats`` (alpha, the set's statistics), ``glubbing`` (the glub probe). Its Qt parts are in
``_qt``."""
