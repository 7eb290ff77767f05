/* The online model's default pipeline, River's StandardScaler | LogisticRegression (SGD, log
 * loss), as one compiled step per outcome: the same floating-point operations in the same order
 * as River 0.26's Python and Rust code, so that it predicts and learns bit for bit as River does
 * (tests/unit/test_linear_core.py compares the two).
 *
 * The state keeps River's dict orders: counts, means and weights share the order in which
 * features were first learned; vars also gets a 0.0 entry for a feature first seen in a
 * prediction (River's scaler reads its vars defaultdict there), so it has an order of its own.
 * Compiled with -ffp-contract=off: a fused multiply-add would round differently. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define IN_COUNTS 1
#define IN_VARS 2
#define CLIP 1e12 /* River's default clip_gradient */

typedef struct {
    PyObject_HEAD
    PyObject *index; /* feature name -> index into the arrays */
    PyObject *names; /* list of names, by index */
    Py_ssize_t n, cap;
    long long *counts;
    double *means, *vars, *weights;
    unsigned char *flags;
    Py_ssize_t *counts_order, n_counts; /* also the order of means and weights */
    Py_ssize_t *vars_order, n_vars;
    double intercept;
    long long n_iterations;
    double lr, l2, lam;
    /* Scratch for one outcome's features. */
    Py_ssize_t scap;
    Py_ssize_t *sidx;
    double *sx, *ss, *sm, *sv, *sw;
    long long *sc;
} Core;

static PyTypeObject CoreType;

/* Resize the array ``c->field`` to ``cap`` elements of ``type``; -1 with MemoryError if not. */
#define RESIZE(field, type, cap)                                          \
    do {                                                                  \
        type *p = PyMem_Realloc(c->field, (size_t)(cap) * sizeof(type));  \
        if (!p) {                                                         \
            PyErr_NoMemory();                                             \
            return -1;                                                    \
        }                                                                 \
        c->field = p;                                                     \
    } while (0)

static Py_ssize_t capacity(Py_ssize_t have, Py_ssize_t need) {
    Py_ssize_t cap = have ? have : 16;
    while (cap < need) cap *= 2;
    return cap;
}

/* Room for ``need`` features in the state's arrays. */
static int grow(Core *c, Py_ssize_t need) {
    if (need <= c->cap) return 0;
    Py_ssize_t cap = capacity(c->cap, need);
    RESIZE(counts, long long, cap);
    RESIZE(means, double, cap);
    RESIZE(vars, double, cap);
    RESIZE(weights, double, cap);
    RESIZE(flags, unsigned char, cap);
    RESIZE(counts_order, Py_ssize_t, cap);
    RESIZE(vars_order, Py_ssize_t, cap);
    c->cap = cap;
    return 0;
}

/* Room for ``need`` features of one outcome in the scratch arrays. */
static int grow_scratch(Core *c, Py_ssize_t need) {
    if (need <= c->scap) return 0;
    Py_ssize_t cap = capacity(c->scap, need);
    RESIZE(sidx, Py_ssize_t, cap);
    RESIZE(sx, double, cap);
    RESIZE(ss, double, cap);
    RESIZE(sm, double, cap);
    RESIZE(sv, double, cap);
    RESIZE(sw, double, cap);
    RESIZE(sc, long long, cap);
    c->scap = cap;
    return 0;
}

/* The index of ``name``, -1 when unknown, -2 on error. */
static Py_ssize_t lookup(Core *c, PyObject *name) {
    PyObject *i = PyDict_GetItemWithError(c->index, name);
    if (i == NULL) return PyErr_Occurred() ? -2 : -1;
    return PyLong_AsSsize_t(i);
}

/* A new entry for ``name`` with no statistics; its index, or -1 on error. */
static Py_ssize_t add(Core *c, PyObject *name) {
    if (grow(c, c->n + 1) < 0) return -1;
    PyObject *i = PyLong_FromSsize_t(c->n);
    if (i == NULL) return -1;
    int err = PyDict_SetItem(c->index, name, i);
    Py_DECREF(i);
    if (err < 0 || PyList_Append(c->names, name) < 0) return -1;
    Py_ssize_t k = c->n++;
    c->counts[k] = 0;
    c->means[k] = c->vars[k] = c->weights[k] = 0.0;
    c->flags[k] = 0;
    return k;
}

/* Read ``x`` (a dict of str to float, as clean_features gives) into the scratch arrays. */
static Py_ssize_t read_x(Core *c, PyObject *x) {
    if (!PyDict_Check(x)) {
        PyErr_SetString(PyExc_TypeError, "features must be a dict");
        return -1;
    }
    Py_ssize_t m = PyDict_GET_SIZE(x), pos = 0, j = 0;
    if (grow_scratch(c, m) < 0) return -1;
    PyObject *k, *v;
    while (PyDict_Next(x, &pos, &k, &v)) {
        double f = PyFloat_AsDouble(v);
        if (f == -1.0 && PyErr_Occurred()) return -1;
        Py_ssize_t i = lookup(c, k);
        if (i == -2) return -1;
        c->sidx[j] = i;
        c->sx[j] = f;
        j++;
    }
    return m;
}

static double sigmoid(double z) {
    if (z < -30) return 0.0;
    if (z > 30) return 1.0;
    return 1 / (1 + exp(-z));
}

/* OnlineLearner._proba on River's pipeline: predict_proba_one and its normalisation. New
 * features get River's 0.0 vars entry. */
static int predict_into(Core *c, PyObject *x, double *out) {
    Py_ssize_t pos = 0, j = 0;
    PyObject *k, *v;
    double acc = 0.0;
    while (PyDict_Next(x, &pos, &k, &v)) {
        Py_ssize_t i = c->sidx[j];
        if (i < 0) {
            i = add(c, k);
            if (i < 0) return -1;
            c->sidx[j] = i;
        }
        if (!(c->flags[i] & IN_VARS)) {
            c->flags[i] |= IN_VARS;
            c->vars_order[c->n_vars++] = i;
        }
        double var = c->vars[i];
        double s = var != 0.0 ? (c->sx[j] - c->means[i]) / pow(var, 0.5) : 0.0;
        if (c->flags[i] & IN_COUNTS) acc += c->weights[i] * s;
        j++;
    }
    double p = sigmoid(acc + c->intercept);
    double q = 1.0 - p, total = p + q;
    if (!(total > 0)) *out = 0.5;
    else *out = total == 1.0 ? p : p / total;
    return 0;
}

static PyObject *Core_predict(Core *c, PyObject *x) {
    Py_ssize_t m = read_x(c, x);
    if (m < 0) return NULL;
    double p;
    if (predict_into(c, x, &p) < 0) return NULL;
    return PyFloat_FromDouble(p);
}

static void decay(Core *c) {
    if (c->lam == 1.0) return;
    for (Py_ssize_t j = 0; j < c->n_counts; j++) c->weights[c->counts_order[j]] *= c->lam;
}

/* learn(x, label, w, first) -> the prediction made before learning, or (feature, what) when the
 * update would make the state non-finite (nothing learned then). ``first``: nothing learned yet,
 * so the prediction is 0.5 and the pipeline is not asked. w == 0 learns nothing but decays. */
static PyObject *Core_learn(Core *c, PyObject *args) {
    PyObject *x;
    int label, first;
    double w;
    if (!PyArg_ParseTuple(args, "O!pdp", &PyDict_Type, &x, &label, &w, &first)) return NULL;
    Py_ssize_t m = read_x(c, x);
    if (m < 0) return NULL;
    double p = 0.5;
    if (!first && predict_into(c, x, &p) < 0) return NULL;
    if (w > 0) {
        double dot = 0.0;
        for (Py_ssize_t j = 0; j < m; j++) {
            Py_ssize_t i = c->sidx[j];
            int known = i >= 0 && (c->flags[i] & IN_COUNTS);
            long long cnt = (known ? c->counts[i] : 0) + 1;
            double xi = c->sx[j];
            double old_mean = known ? c->means[i] : 0.0;
            double old_var = i >= 0 ? c->vars[i] : 0.0;
            double mean = old_mean + (xi - old_mean) / (double)cnt;
            double var = old_var + ((xi - old_mean) * (xi - mean) - old_var) / (double)cnt;
            c->sc[j] = cnt;
            c->sm[j] = mean;
            c->sv[j] = var;
            c->ss[j] = var != 0.0 ? (xi - mean) / pow(var, 0.5) : 0.0;
            c->sw[j] = known ? c->weights[i] : 0.0;
            if (known) dot += c->sw[j] * c->ss[j];
        }
        double z = dot + c->intercept, yt = label ? 1.0 : -1.0, zz = z * yt, g;
        if (zz > 18.0) g = exp(-zz) * -yt;
        else if (zz < -18.0) g = -yt;
        else g = -yt / (exp(zz) + 1.0);
        g *= w;
        g = CLIP < g ? CLIP : g; /* Python's min(g, CLIP), then max(., -CLIP) */
        g = -CLIP > g ? -CLIP : g;
        double intercept = c->intercept - c->lr * g;
        for (Py_ssize_t j = 0; j < m; j++) {
            double gj = c->ss[j] * g;
            if (c->l2 != 0.0) gj += c->sw[j] * c->l2;
            c->sw[j] = c->sw[j] - c->lr * gj;
        }
        /* The first non-finite number, as OnlineLearner._non_finite names it: the scaler's in
         * the order of x, then the weights in their own order, then the intercept. */
        Py_ssize_t bad = -1;
        const char *what = NULL;
        for (Py_ssize_t j = 0; j < m && bad < 0; j++)
            if (!isfinite(c->sm[j]) || !isfinite(c->sv[j])) {
                bad = j;
                what = "scaler statistics";
            }
        if (bad < 0) {
            /* Known features keep their place in the weights' order; new ones follow, in x's. */
            Py_ssize_t best = -1, best_rank = 0;
            for (Py_ssize_t j = 0; j < m; j++) {
                if (isfinite(c->sw[j])) continue;
                Py_ssize_t i = c->sidx[j], rank;
                if (i >= 0 && (c->flags[i] & IN_COUNTS)) {
                    rank = 0;
                    while (c->counts_order[rank] != i) rank++;
                } else {
                    rank = c->n_counts + j;
                }
                if (best < 0 || rank < best_rank) {
                    best = j;
                    best_rank = rank;
                }
            }
            if (best >= 0) {
                bad = best;
                what = "weights";
            }
        }
        if (bad >= 0 || !isfinite(intercept)) {
            PyObject *name;
            if (bad >= 0) {
                Py_ssize_t pos = 0, j = 0;
                PyObject *k, *v;
                while (PyDict_Next(x, &pos, &k, &v) && j < bad) j++;
                name = k;
            } else {
                name = NULL;
                what = "intercept";
            }
            if (name == NULL) return Py_BuildValue("(ss)", "intercept", what);
            return Py_BuildValue("(Os)", name, what);
        }
        Py_ssize_t pos = 0, j = 0;
        PyObject *k, *v;
        while (PyDict_Next(x, &pos, &k, &v)) {
            Py_ssize_t i = c->sidx[j];
            if (i < 0 && (i = add(c, k)) < 0) return NULL;
            if (!(c->flags[i] & IN_COUNTS)) {
                c->flags[i] |= IN_COUNTS;
                c->counts_order[c->n_counts++] = i;
            }
            if (!(c->flags[i] & IN_VARS)) {
                c->flags[i] |= IN_VARS;
                c->vars_order[c->n_vars++] = i;
            }
            c->counts[i] = c->sc[j];
            c->means[i] = c->sm[j];
            c->vars[i] = c->sv[j];
            c->weights[i] = c->sw[j];
            j++;
        }
        c->intercept = intercept;
        c->n_iterations++;
    }
    decay(c);
    return PyFloat_FromDouble(p);
}

static PyObject *pairs(Core *c, Py_ssize_t *order, Py_ssize_t n, int what) {
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t i = order[j];
        PyObject *v = what == 0   ? PyLong_FromLongLong(c->counts[i])
                      : what == 1 ? PyFloat_FromDouble(c->means[i])
                      : what == 2 ? PyFloat_FromDouble(c->vars[i])
                                  : PyFloat_FromDouble(c->weights[i]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyObject *t = PyTuple_Pack(2, PyList_GET_ITEM(c->names, i), v);
        Py_DECREF(v);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, t);
    }
    return out;
}

/* state() -> (counts, means, vars, weights, intercept, n_iterations), each list of (name, value)
 * pairs in River's dict order. */
static PyObject *Core_state(Core *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *counts = pairs(c, c->counts_order, c->n_counts, 0);
    PyObject *means = pairs(c, c->counts_order, c->n_counts, 1);
    PyObject *vars = pairs(c, c->vars_order, c->n_vars, 2);
    PyObject *weights = pairs(c, c->counts_order, c->n_counts, 3);
    PyObject *out = NULL;
    if (counts && means && vars && weights)
        out = Py_BuildValue("(OOOOdL)", counts, means, vars, weights, c->intercept,
                            c->n_iterations);
    Py_XDECREF(counts);
    Py_XDECREF(means);
    Py_XDECREF(vars);
    Py_XDECREF(weights);
    return out;
}

/* load(counts, means, vars, weights, intercept, n_iterations) into an empty core: True, or
 * False when the state has a shape River's learning cannot give (the caller keeps River's
 * objects then). */
static PyObject *Core_load(Core *c, PyObject *args) {
    PyObject *counts, *means, *vars, *weights;
    double intercept;
    long long n_iterations;
    if (!PyArg_ParseTuple(args, "O!O!O!O!dL", &PyList_Type, &counts, &PyList_Type, &means,
                          &PyList_Type, &vars, &PyList_Type, &weights, &intercept, &n_iterations))
        return NULL;
    if (c->n != 0) {
        PyErr_SetString(PyExc_ValueError, "load needs an empty core");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(counts);
    if (PyList_GET_SIZE(means) != n || PyList_GET_SIZE(weights) != n) Py_RETURN_FALSE;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(vars); j++) {
        PyObject *t = PyList_GET_ITEM(vars, j), *name;
        double v;
        if (!PyArg_ParseTuple(t, "Od", &name, &v)) return NULL;
        if (!PyUnicode_CheckExact(name) || lookup(c, name) != -1) Py_RETURN_FALSE;
        Py_ssize_t i = add(c, name);
        if (i < 0) return NULL;
        c->vars[i] = v;
        c->flags[i] |= IN_VARS;
        c->vars_order[c->n_vars++] = i;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *name, *nm, *nw;
        long long cnt;
        double mean, w;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(counts, j), "OL", &name, &cnt)) return NULL;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(means, j), "Od", &nm, &mean)) return NULL;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(weights, j), "Od", &nw, &w)) return NULL;
        Py_ssize_t i = lookup(c, name);
        if (i == -2) return NULL;
        int same_m = PyObject_RichCompareBool(name, nm, Py_EQ);
        int same_w = PyObject_RichCompareBool(name, nw, Py_EQ);
        if (same_m < 0 || same_w < 0) return NULL;
        /* Every learned feature has a vars entry; one listed twice is not River's. */
        if (i < 0 || !same_m || !same_w || (c->flags[i] & IN_COUNTS)) Py_RETURN_FALSE;
        c->flags[i] |= IN_COUNTS;
        c->counts_order[c->n_counts++] = i;
        c->counts[i] = cnt;
        c->means[i] = mean;
        c->weights[i] = w;
    }
    /* River's scaler reads a mean only where it learned one: a variance without is not River's. */
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (!(c->flags[i] & IN_COUNTS) && c->vars[i] != 0.0) Py_RETURN_FALSE;
    c->intercept = intercept;
    c->n_iterations = n_iterations;
    Py_RETURN_TRUE;
}

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"learning_rate", "l2", "decay", NULL};
    double lr, l2, lam;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ddd", kw, &lr, &l2, &lam)) return NULL;
    Core *c = (Core *)type->tp_alloc(type, 0);
    if (c == NULL) return NULL;
    c->lr = lr;
    c->l2 = l2;
    c->lam = lam;
    c->index = PyDict_New();
    c->names = PyList_New(0);
    if (c->index == NULL || c->names == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

static void Core_dealloc(Core *c) {
    Py_XDECREF(c->index);
    Py_XDECREF(c->names);
    PyMem_Free(c->counts);
    PyMem_Free(c->means);
    PyMem_Free(c->vars);
    PyMem_Free(c->weights);
    PyMem_Free(c->flags);
    PyMem_Free(c->counts_order);
    PyMem_Free(c->vars_order);
    PyMem_Free(c->sidx);
    PyMem_Free(c->sx);
    PyMem_Free(c->ss);
    PyMem_Free(c->sm);
    PyMem_Free(c->sv);
    PyMem_Free(c->sw);
    PyMem_Free(c->sc);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* clean(x) -> a new dict of x's finite float values, keys sorted, None dropped; None when x is
 * not a dict of str to float or None (the caller's Python path handles the rest). */
static PyObject *clean(PyObject *Py_UNUSED(module), PyObject *x) {
    if (!PyDict_CheckExact(x)) Py_RETURN_NONE;
    PyObject *keys = PyDict_Keys(x);
    if (keys == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *v = PyDict_GetItemWithError(x, PyList_GET_ITEM(keys, j));
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(keys, j)) || v == NULL ||
            !(v == Py_None || PyFloat_CheckExact(v))) {
            Py_DECREF(keys);
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;
        }
    }
    if (PyList_Sort(keys) < 0) {
        Py_DECREF(keys);
        return NULL;
    }
    PyObject *out = PyDict_New();
    for (Py_ssize_t j = 0; out != NULL && j < n; j++) {
        PyObject *k = PyList_GET_ITEM(keys, j), *v = PyDict_GetItemWithError(x, k);
        if (v == NULL) {
            Py_CLEAR(out);
            break;
        }
        if (v == Py_None || !isfinite(PyFloat_AS_DOUBLE(v))) continue;
        if (PyDict_SetItem(out, k, v) < 0) Py_CLEAR(out);
    }
    Py_DECREF(keys);
    return out;
}

static PyObject *Core_params(Core *c, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("(ddd)", c->lr, c->l2, c->lam);
}

static PyMethodDef Core_methods[] = {
    {"params", (PyCFunction)Core_params, METH_NOARGS,
     "params() -> (learning_rate, l2, decay), the constructor's arguments"},
    {"predict", (PyCFunction)Core_predict, METH_O,
     "predict(x) -> the win probability of clean features x (River's answer)"},
    {"learn", (PyCFunction)Core_learn, METH_VARARGS,
     "learn(x, label, w, first) -> the prediction before learning, or (feature, what)"},
    {"state", (PyCFunction)Core_state, METH_NOARGS,
     "state() -> (counts, means, vars, weights, intercept, n_iterations)"},
    {"load", (PyCFunction)Core_load, METH_VARARGS,
     "load(counts, means, vars, weights, intercept, n_iterations) -> whether it was taken"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "models._linear_core.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "StandardScaler | LogisticRegression learned as River does, compiled.",
    .tp_new = Core_new,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

static PyMethodDef module_methods[] = {
    {"clean", (PyCFunction)clean, METH_O,
     "clean(x) -> clean_features(x) for a dict of str to float or None, else None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "models._linear_core", NULL, -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__linear_core(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
