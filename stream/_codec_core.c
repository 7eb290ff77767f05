/* The common case of decoding a TradeOutcome or a SignalRequest, compiled: a JSON object parsed
 * by orjson whose ids are short strings, whose features are JSON numbers with a fraction or an
 * exponent (or null), and whose ts, if any, is an integer. Anything else (an error to report, a time
 * string, an integer feature, a key named twice or a colon inside a string) returns None, and
 * stream.codec's Python path decodes the message as it always has
 * (tests/unit/test_codec_core.py compares the two). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define MAX_SHORT_ID 64 /* characters: at most 256 UTF-8 bytes, as stream.codec measures */

static PyObject *orjson_loads;

/* The parsed object of ``raw`` when it is a dict whose members the colons and braces of the
 * text account for (stream._json_checks.check_unique_keys' first test); NULL without an error
 * set otherwise. */
static PyObject *parse(PyObject *raw, Py_ssize_t max_bytes) {
    if (!PyBytes_CheckExact(raw) || PyBytes_GET_SIZE(raw) > max_bytes) return NULL;
    const char *s = PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw), colons = 0, braces = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == ':') colons++;
        else if (ch == '{') braces++;
        else if (ch == '[') return NULL;
    }
    PyObject *doc = PyObject_CallOneArg(orjson_loads, raw);
    if (doc == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyDict_CheckExact(doc)) {
        Py_DECREF(doc);
        return NULL;
    }
    Py_ssize_t members = PyDict_GET_SIZE(doc), objects = 1, pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(doc, &pos, &k, &v))
        if (PyDict_CheckExact(v)) {
            members += PyDict_GET_SIZE(v);
            objects++;
        }
    if (braces != objects || colons != members) {
        Py_DECREF(doc);
        return NULL;
    }
    return doc;
}

/* A borrowed reference to the id ``name`` if it is a string of 1 to 64 characters. */
static PyObject *short_id(PyObject *doc, const char *name) {
    PyObject *v = PyDict_GetItemString(doc, name);
    if (v == NULL || !PyUnicode_CheckExact(v)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    return n >= 1 && n <= MAX_SHORT_ID ? v : NULL;
}

/* Py_None when ``name`` is absent or null, the value if a non-empty string, else NULL. */
static PyObject *optional_text(PyObject *doc, const char *name, int short_only) {
    PyObject *v = PyDict_GetItemString(doc, name);
    if (v == NULL || v == Py_None) return Py_None;
    if (!PyUnicode_CheckExact(v)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if (n < 1 || (short_only && n > MAX_SHORT_ID)) return NULL;
    return v;
}

/* A new dict of the finite values of ``v`` when all its values are floats or null; NULL
 * otherwise (an error set only when one occurred). */
static PyObject *features(PyObject *v, Py_ssize_t max_features) {
    if (!PyDict_CheckExact(v) || PyDict_GET_SIZE(v) > max_features) return NULL;
    Py_ssize_t pos = 0;
    PyObject *k, *x;
    while (PyDict_Next(v, &pos, &k, &x))
        if (x != Py_None && !PyFloat_CheckExact(x)) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    pos = 0;
    while (PyDict_Next(v, &pos, &k, &x))
        if (x != Py_None && isfinite(PyFloat_AS_DOUBLE(x)) && PyDict_SetItem(out, k, x) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    return out;
}

/* A new reference to the ts: Py_None when absent or null, an int within int64; NULL else. */
static PyObject *ts_of(PyObject *doc) {
    PyObject *v = PyDict_GetItemString(doc, "ts");
    if (v == NULL || v == Py_None) Py_RETURN_NONE;
    if (!PyLong_CheckExact(v)) return NULL;
    int overflow;
    (void)PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

#define FALLBACK()                                                   \
    do {                                                             \
        Py_XDECREF(feats);                                           \
        Py_XDECREF(ts);                                              \
        Py_DECREF(doc);                                              \
        if (PyErr_Occurred()) return NULL;                           \
        Py_RETURN_NONE;                                              \
    } while (0)

/* outcome(raw, max_bytes, max_features, cls) -> cls(...) or None */
static PyObject *outcome(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *raw, *cls;
    Py_ssize_t max_bytes, max_features;
    if (!PyArg_ParseTuple(args, "OnnO", &raw, &max_bytes, &max_features, &cls)) return NULL;
    PyObject *doc = parse(raw, max_bytes), *feats = NULL, *ts = NULL;
    if (doc == NULL) Py_RETURN_NONE;
    PyObject *oid = short_id(doc, "outcome_id"), *sid = short_id(doc, "signal_id");
    PyObject *symbol = short_id(doc, "symbol"), *label = PyDict_GetItemString(doc, "label");
    if (!oid || !sid || !symbol || !label) FALLBACK();
    if (PyLong_CheckExact(label) || PyFloat_CheckExact(label)) {
        double f = PyFloat_CheckExact(label) ? PyFloat_AS_DOUBLE(label) : -1.0;
        if (PyLong_CheckExact(label)) {
            int overflow;
            long long i = PyLong_AsLongLongAndOverflow(label, &overflow);
            f = overflow ? -1.0 : (double)i;
        }
        if (f != 0.0 && f != 1.0) FALLBACK();
        label = f == 1.0 ? Py_True : Py_False;
    } else if (label != Py_True && label != Py_False) {
        FALLBACK();
    }
    PyObject *rr = PyDict_GetItemString(doc, "realized_rr");
    if (rr == NULL || rr == Py_None) rr = Py_None;
    else if (!PyFloat_CheckExact(rr)) FALLBACK();
    else if (!isfinite(PyFloat_AS_DOUBLE(rr))) rr = Py_None;
    PyObject *fv = PyDict_GetItemString(doc, "features");
    if (fv != NULL && fv != Py_None) {
        if ((feats = features(fv, max_features)) == NULL) FALLBACK();
        if (PyDict_GET_SIZE(feats) == 0) Py_CLEAR(feats); /* none usable: joined, as absent */
    }
    PyObject *key = optional_text(doc, "model_key", 1);
    if (key == NULL || (ts = ts_of(doc)) == NULL) FALLBACK();
    PyObject *argv[] = {oid, sid, symbol, label, key == Py_None ? symbol : key, rr,
                        feats ? feats : Py_None, ts};
    PyObject *out = PyObject_Vectorcall(cls, argv, 8, NULL);
    Py_XDECREF(feats);
    Py_DECREF(ts);
    Py_DECREF(doc);
    return out;
}

/* signal(raw, max_bytes, max_features, cls) -> cls(...) or None */
static PyObject *signal_(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *raw, *cls;
    Py_ssize_t max_bytes, max_features;
    if (!PyArg_ParseTuple(args, "OnnO", &raw, &max_bytes, &max_features, &cls)) return NULL;
    PyObject *doc = parse(raw, max_bytes), *feats = NULL, *ts = NULL;
    if (doc == NULL) Py_RETURN_NONE;
    PyObject *sid = short_id(doc, "signal_id"), *symbol = short_id(doc, "symbol");
    PyObject *fv = PyDict_GetItemString(doc, "features");
    if (!sid || !symbol || !fv || (feats = features(fv, max_features)) == NULL) FALLBACK();
    PyObject *key = optional_text(doc, "model_key", 1);
    PyObject *strategy = optional_text(doc, "strategy", 0);
    PyObject *side = optional_text(doc, "side", 0);
    if (!key || !strategy || !side || (ts = ts_of(doc)) == NULL) FALLBACK();
    PyObject *argv[] = {sid, symbol, feats, key == Py_None ? symbol : key, strategy, side, ts};
    PyObject *out = PyObject_Vectorcall(cls, argv, 7, NULL);
    Py_DECREF(feats);
    Py_DECREF(ts);
    Py_DECREF(doc);
    return out;
}

static PyMethodDef methods[] = {
    {"outcome", outcome, METH_VARARGS,
     "outcome(raw, max_bytes, max_features, cls) -> a TradeOutcome, or None for the Python path"},
    {"signal", signal_, METH_VARARGS,
     "signal(raw, max_bytes, max_features, cls) -> a SignalRequest, or None for the Python path"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "stream._codec_core", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__codec_core(void) {
    PyObject *orjson = PyImport_ImportModule("orjson");
    if (orjson == NULL) return NULL;
    orjson_loads = PyObject_GetAttrString(orjson, "loads");
    Py_DECREF(orjson);
    if (orjson_loads == NULL) return NULL;
    return PyModule_Create(&module);
}
