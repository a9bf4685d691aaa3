/* A C extension built against *stock* CPython 3.13 and imported by cowpy:
 * proves that PyGC_Head, PyObject and the GC-tracking inline functions keep
 * their stock layout and meaning.  Box is a GC container with one slot, so
 * cycles of Boxes are only freed by the cyclic collector. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static Py_ssize_t freed = 0;

typedef struct {
    PyObject_HEAD
    PyObject *item;
} Box;

static int
box_traverse(Box *self, visitproc visit, void *arg)
{
    Py_VISIT(self->item);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
box_clear(Box *self)
{
    Py_CLEAR(self->item);
    return 0;
}

static void
box_dealloc(Box *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    box_clear(self);
    freed++;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
box_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *item = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &item)) {
        return NULL;
    }
    Box *self = PyObject_GC_New(Box, type);
    if (self == NULL) {
        return NULL;
    }
    self->item = Py_NewRef(item);
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
box_get(Box *self, void *closure)
{
    return Py_NewRef(self->item);
}

static int
box_set(Box *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete item");
        return -1;
    }
    Py_SETREF(self->item, Py_NewRef(value));
    return 0;
}

static PyGetSetDef box_getset[] = {
    {"item", (getter)box_get, (setter)box_set, NULL, NULL},
    {NULL},
};

static PyType_Slot box_slots[] = {
    {Py_tp_new, box_new},
    {Py_tp_dealloc, box_dealloc},
    {Py_tp_traverse, box_traverse},
    {Py_tp_clear, box_clear},
    {Py_tp_getset, box_getset},
    {0, NULL},
};

static PyType_Spec box_spec = {
    "cowabi.Box", sizeof(Box), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, box_slots,
};

static PyObject *
get_freed(PyObject *mod, PyObject *unused)
{
    return PyLong_FromSsize_t(freed);
}

/* What the extension's compile-time view of the ABI is. */
static PyObject *
layout(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue("{snsnsn}",
                         "PyObject", (Py_ssize_t)sizeof(PyObject),
                         "PyVarObject", (Py_ssize_t)sizeof(PyVarObject),
                         "api", (Py_ssize_t)PYTHON_API_VERSION);
}

static PyObject *
is_tracked(PyObject *mod, PyObject *obj)
{
    return PyBool_FromLong(PyObject_GC_IsTracked(obj));
}

static PyMethodDef methods[] = {
    {"freed", get_freed, METH_NOARGS, NULL},
    {"layout", layout, METH_NOARGS, NULL},
    {"is_tracked", is_tracked, METH_O, NULL},
    {NULL},
};

static int
exec_module(PyObject *mod)
{
    PyObject *tp = PyType_FromModuleAndSpec(mod, &box_spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    return PyModule_Add(mod, "Box", tp);
}

static PyModuleDef_Slot mod_slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "cowabi", NULL, 0, methods, mod_slots,
};

PyMODINIT_FUNC
PyInit_cowabi(void)
{
    return PyModuleDef_Init(&moddef);
}
