/*
 * ryng_async._speedups: the batched proof of a chunk of wire-form leads, in C.
 *
 * leads_are_valid(rows) answers the question _lead_checks.python_leads_are_valid answers,
 * in one pass over the rows with no Python code run per lead: is every row a plain dict in
 * the vendor's wire form that validate_lead would accept unchanged? False means "not
 * proven", never "invalid": the caller then checks lead by lead, and that path names the
 * field and the position. Its answers are python_leads_are_valid's (the same types: a dict,
 * a list of agents and an agent exactly, a key or a value a str or a subclass), but for one
 * case where it is stricter: a lone surrogate, which the pure-Python passes leave to the
 * encoder to refuse. Stricter is safe, looser never. The rules, as validate_lead has them:
 *   - "number": required; '+', a digit 1-9, then 6 to 14 digits 0-9 (ASCII only);
 *   - "agentsAssigned": a non-empty list of non-empty strings;
 *   - "customField<N>", N >= 1 without a leading zero: a string;
 *   - no other key; no string holding a lone surrogate (it cannot be sent as UTF-8).
 * No Python code runs while the rows are read (no __eq__, no __hash__), so the dicts
 * cannot change under the loop and every key seen stays alive until it returns.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>

#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

enum key_kind { KEY_UNKNOWN = 0, KEY_NUMBER, KEY_AGENTS, KEY_CUSTOM };

/* Rows of one chunk usually share their key objects: up to this many are remembered by
 * identity, so a key's name is read once a chunk, not once a lead. */
#define KNOWN_KEYS 32

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
holds_lone_surrogate(PyObject *text)
{
    int kind = PyUnicode_KIND(text);
    if (kind == PyUnicode_1BYTE_KIND) {
        return 0;
    }
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF) {
            return 1;
        }
    }
    return 0;
}

/* A str (or a subclass, as str.join takes one) whose characters can be read. */
static int
is_ready_str(PyObject *value)
{
    if (!PyUnicode_Check(value)) {
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    /* Before 3.12 a string made by the legacy C API may not be ready yet. */
    if (PyUnicode_READY(value) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    return 1;
}

static int
is_text(PyObject *value)
{
    return is_ready_str(value) && (PyUnicode_IS_ASCII(value) || !holds_lone_surrogate(value));
}

static int
is_e164(PyObject *value)
{
    if (!is_ready_str(value) || !PyUnicode_IS_ASCII(value)) {
        return 0;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    if (length < 8 || length > 16) {
        return 0;
    }
    const char *s = (const char *)PyUnicode_DATA(value);
    if (s[0] != '+' || s[1] < '1' || s[1] > '9') {
        return 0;
    }
    for (Py_ssize_t i = 2; i < length; i++) {
        if (!is_digit(s[i])) {
            return 0;
        }
    }
    return 1;
}

static enum key_kind
kind_of_key(PyObject *key)
{
    if (!is_ready_str(key) || !PyUnicode_IS_ASCII(key)) {
        return KEY_UNKNOWN;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(key);
    const char *s = (const char *)PyUnicode_DATA(key);
    if (length == 6 && memcmp(s, "number", 6) == 0) {
        return KEY_NUMBER;
    }
    if (length == 14 && memcmp(s, "agentsAssigned", 14) == 0) {
        return KEY_AGENTS;
    }
    if (length < 12 || memcmp(s, "customField", 11) != 0 || s[11] < '1' || s[11] > '9') {
        return KEY_UNKNOWN;
    }
    for (Py_ssize_t i = 12; i < length; i++) {
        if (!is_digit(s[i])) {
            return KEY_UNKNOWN;
        }
    }
    return KEY_CUSTOM;
}

static int
agents_are_valid(PyObject *agents)
{
    if (!PyList_CheckExact(agents) || PyList_GET_SIZE(agents) == 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(agents); i++) {
        PyObject *agent = PyList_GET_ITEM(agents, i);
        if (!PyUnicode_CheckExact(agent) || PyUnicode_GET_LENGTH(agent) == 0 || !is_text(agent)) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
leads_are_valid(PyObject *Py_UNUSED(module), PyObject *rows)
{
    if (!PyList_CheckExact(rows)) {
        Py_RETURN_FALSE;
    }
    PyObject *known[KNOWN_KEYS];
    enum key_kind known_kind[KNOWN_KEYS];
    int known_count = 0;
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(rows); r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyDict_CheckExact(row)) {
            Py_RETURN_FALSE;
        }
        Py_ssize_t position = 0;
        PyObject *key, *value;
        int has_number = 0;
        while (PyDict_Next(row, &position, &key, &value)) {
            enum key_kind kind = KEY_UNKNOWN;
            for (int i = 0; i < known_count; i++) {
                if (known[i] == key) {
                    kind = known_kind[i];
                    break;
                }
            }
            if (kind == KEY_UNKNOWN) {
                kind = kind_of_key(key);
                if (kind == KEY_UNKNOWN) {
                    Py_RETURN_FALSE;
                }
                if (known_count < KNOWN_KEYS) {
                    known[known_count] = key;
                    known_kind[known_count++] = kind;
                }
            }
            if (kind == KEY_NUMBER) {
                if (!is_e164(value)) {
                    Py_RETURN_FALSE;
                }
                has_number = 1;
            }
            else if (kind == KEY_AGENTS) {
                if (!agents_are_valid(value)) {
                    Py_RETURN_FALSE;
                }
            }
            else if (!is_text(value)) {
                Py_RETURN_FALSE;
            }
        }
        if (!has_number) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

/* -- Lead objects, a column at a time ----------------------------------------------- */

/* The offset of a Lead field in its instances, read off the class's member descriptor
 * (msgspec lays Struct fields out as slots); -1 if the class is not laid out so. */
static Py_ssize_t
field_offset(PyObject *lead_type, const char *name)
{
    PyObject *descriptor = PyObject_GetAttrString(lead_type, name);
    if (descriptor == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type == Py_T_OBJECT_EX) {
            offset = member->offset;
        }
    }
    Py_DECREF(descriptor);
    return offset;
}

static PyObject *
field_of(PyObject *lead, Py_ssize_t offset)
{
    return *(PyObject **)((char *)lead + offset);
}

static int
is_field_index(PyObject *key)
{
    if (!PyLong_CheckExact(key)) {
        return 0;  /* True == 1, yet it must stay "customFieldTrue" (refused) */
    }
    int overflow = 0;
    long index = PyLong_AsLongAndOverflow(key, &overflow);
    return overflow == 0 && index >= 1;  /* an index past a long is left to the slow path */
}

/* Put a new reference in a column's cell, dropping any value the cell held. */
static void
set_cell(PyObject *column, Py_ssize_t row, PyObject *value)
{
    PyObject *old = PyList_GET_ITEM(column, row);
    PyList_SET_ITEM(column, row, value);
    Py_XDECREF(old);
}

/* The columns of a same-shaped chunk of valid Leads, or None (not proven). */
static PyObject *
lead_columns(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "lead_columns(rows, lead_type) takes 2 arguments");
        return NULL;
    }
    PyObject *rows = args[0], *lead_type = args[1];
    if (!PyList_CheckExact(rows) || PyList_GET_SIZE(rows) == 0 || !PyType_Check(lead_type)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t number_at = field_offset(lead_type, "number");
    Py_ssize_t agents_at = field_offset(lead_type, "agents_assigned");
    Py_ssize_t fields_at = field_offset(lead_type, "custom_fields");
    if (number_at < 0 || agents_at < 0 || fields_at < 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    /* The first lead gives the shape: its custom field indexes (in its order) and
     * whether agents are named; every lead must have the same. */
    PyObject *first = PyList_GET_ITEM(rows, 0);
    if (!Py_IS_TYPE(first, (PyTypeObject *)lead_type)) {
        Py_RETURN_NONE;
    }
    PyObject *first_fields = field_of(first, fields_at);
    PyObject *first_agents = field_of(first, agents_at);
    if (first_fields == NULL || first_agents == NULL || !PyDict_CheckExact(first_fields)) {
        Py_RETURN_NONE;
    }
    int named = first_agents != Py_None;
    PyObject *indexes = PyDict_Keys(first_fields);
    if (indexes == NULL) {
        return NULL;
    }
    Py_ssize_t width = PyList_GET_SIZE(indexes);
    for (Py_ssize_t i = 0; i < width; i++) {
        if (!is_field_index(PyList_GET_ITEM(indexes, i))) {
            Py_DECREF(indexes);
            Py_RETURN_NONE;
        }
    }
    /* columns: numbers, then the agents' lists if named, then one a custom field. */
    Py_ssize_t ncolumns = 1 + named + width;
    PyObject *columns = PyList_New(ncolumns);
    if (columns == NULL) {
        Py_DECREF(indexes);
        return NULL;
    }
    for (Py_ssize_t c = 0; c < ncolumns; c++) {
        PyObject *column = PyList_New(count);
        if (column == NULL) {
            goto error;
        }
        PyList_SET_ITEM(columns, c, column);
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *lead = PyList_GET_ITEM(rows, r);
        if (!Py_IS_TYPE(lead, (PyTypeObject *)lead_type)) {
            goto not_proven;
        }
        PyObject *number = field_of(lead, number_at);
        PyObject *agents = field_of(lead, agents_at);
        PyObject *fields = field_of(lead, fields_at);
        if (number == NULL || agents == NULL || fields == NULL || !is_e164(number)) {
            goto not_proven;
        }
        if (!PyDict_CheckExact(fields) || PyDict_GET_SIZE(fields) != width) {
            goto not_proven;
        }
        Py_INCREF(number);
        PyList_SET_ITEM(PyList_GET_ITEM(columns, 0), r, number);
        if (named) {
            if (!PyList_CheckExact(agents) && !PyTuple_CheckExact(agents)) {
                goto not_proven;
            }
            Py_ssize_t n = PySequence_Fast_GET_SIZE(agents);
            if (n == 0) {
                goto not_proven;
            }
            PyObject **items = PySequence_Fast_ITEMS(agents);
            for (Py_ssize_t i = 0; i < n; i++) {
                if (!PyUnicode_CheckExact(items[i]) || PyUnicode_GET_LENGTH(items[i]) == 0
                    || !is_text(items[i])) {
                    goto not_proven;
                }
            }
            /* A list of its own a lead, as Lead.to_wire makes one. */
            PyObject *copy = PyList_New(n);
            if (copy == NULL) {
                goto error;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                Py_INCREF(items[i]);
                PyList_SET_ITEM(copy, i, items[i]);
            }
            PyList_SET_ITEM(PyList_GET_ITEM(columns, 1), r, copy);
        }
        else if (agents != Py_None) {
            goto not_proven;
        }
        /* Every key an exact int and every index of the first lead there: the same keys.
         * Small ints are shared objects, so a lead keyed in the first lead's order is read
         * in one walk; any other is looked up index by index. */
        Py_ssize_t position = 0, i = 0;
        PyObject *key, *value;
        int in_order = 1;
        while (PyDict_Next(fields, &position, &key, &value)) {
            if (!PyLong_CheckExact(key)) {
                goto not_proven;
            }
            if (in_order && key == PyList_GET_ITEM(indexes, i)) {
                if (!is_text(value)) {
                    goto not_proven;
                }
                Py_INCREF(value);
                set_cell(PyList_GET_ITEM(columns, 1 + named + i), r, value);
            }
            else {
                in_order = 0;
            }
            i++;
        }
        for (i = 0; !in_order && i < width; i++) {
            value = PyDict_GetItemWithError(fields, PyList_GET_ITEM(indexes, i));
            if (value == NULL) {
                if (PyErr_Occurred()) {
                    goto error;
                }
                goto not_proven;
            }
            if (!is_text(value)) {
                goto not_proven;
            }
            Py_INCREF(value);
            set_cell(PyList_GET_ITEM(columns, 1 + named + i), r, value);
        }
    }
    PyObject *shape = PyList_AsTuple(indexes);
    Py_DECREF(indexes);
    if (shape == NULL) {
        Py_DECREF(columns);
        return NULL;
    }
    return Py_BuildValue("(NON)", shape, named ? Py_True : Py_False, columns);

not_proven:
    Py_DECREF(indexes);
    Py_DECREF(columns);
    Py_RETURN_NONE;
error:
    Py_DECREF(indexes);
    Py_DECREF(columns);
    return NULL;
}

PyDoc_STRVAR(lead_columns_doc,
"lead_columns(rows, lead_type, /)\n--\n\n"
"The columns of a same-shaped chunk of valid Leads, or None (not proven).\n\n"
"Returns (indexes, named, columns): the first lead's custom field indexes in its order,\n"
"whether every lead names agents, and the columns: the numbers, the agents' lists (a new\n"
"list a lead) if named, then one column a custom field, in the order of indexes.");

/* -- CSV rows into lead dicts ------------------------------------------------------- */

static int
needs_strip(PyObject *cell)
{
    if (!PyUnicode_CheckExact(cell)) {
        return 1;  /* whatever it is, its own strip() decides */
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(cell);
    if (length == 0) {
        return 0;
    }
    int kind = PyUnicode_KIND(cell);
    const void *data = PyUnicode_DATA(cell);
    return Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, 0))
        || Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, length - 1));
}

/* rows_to_dicts(rows, keys, indices, strip_at): a dict a row, as the display
 * {keys[0]: row[indices[0]], ...} makes it, the cell under keys[strip_at] stripped. */
static PyObject *
rows_to_dicts(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[0]) || !PyTuple_Check(args[1])
        || !PyTuple_Check(args[2]) || !PyLong_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "rows_to_dicts(rows: list, keys: tuple, indices: tuple, strip_at: int)");
        return NULL;
    }
    PyObject *rows = args[0], *keys = args[1], *indices = args[2];
    Py_ssize_t width = PyTuple_GET_SIZE(keys);
    if (PyTuple_GET_SIZE(indices) != width) {
        PyErr_SetString(PyExc_ValueError, "rows_to_dicts: as many indices as keys");
        return NULL;
    }
    Py_ssize_t strip_at = PyLong_AsSsize_t(args[3]);
    if (strip_at == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t *at = PyMem_New(Py_ssize_t, width > 0 ? width : 1);
    if (at == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < width; k++) {
        at[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(indices, k));
        if (at[k] < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "rows_to_dicts: indices must be >= 0");
            }
            PyMem_Free(at);
            return NULL;
        }
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    PyObject *leads = PyList_New(count);
    if (leads == NULL) {
        PyMem_Free(at);
        return NULL;
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyList_Check(row)) {
            PyErr_Format(PyExc_TypeError, "rows_to_dicts: row %zd is not a list", r);
            goto error;
        }
        PyObject *lead = PyDict_New();
        if (lead == NULL) {
            goto error;
        }
        PyList_SET_ITEM(leads, r, lead);
        for (Py_ssize_t k = 0; k < width; k++) {
            if (at[k] >= PyList_GET_SIZE(row)) {
                PyErr_SetString(PyExc_IndexError, "list index out of range");
                goto error;
            }
            PyObject *cell = PyList_GET_ITEM(row, at[k]);
            int failed;
            if (k == strip_at && needs_strip(cell)) {
                PyObject *stripped = PyObject_CallMethod(cell, "strip", NULL);
                if (stripped == NULL) {
                    goto error;
                }
                failed = PyDict_SetItem(lead, PyTuple_GET_ITEM(keys, k), stripped);
                Py_DECREF(stripped);
            }
            else {
                failed = PyDict_SetItem(lead, PyTuple_GET_ITEM(keys, k), cell);
            }
            if (failed) {
                goto error;
            }
        }
    }
    PyMem_Free(at);
    return leads;
error:
    PyMem_Free(at);
    Py_DECREF(leads);
    return NULL;
}

PyDoc_STRVAR(rows_to_dicts_doc,
"rows_to_dicts(rows, keys, indices, strip_at, /)\n--\n\n"
"A dict a row: {keys[0]: row[indices[0]], ...}, the cell under keys[strip_at] stripped\n"
"of surrounding whitespace (str.strip()); -1 strips none.");

PyDoc_STRVAR(leads_are_valid_doc,
"leads_are_valid(rows, /)\n--\n\n"
"Say whether every row is a plain wire-form dict that validate_lead would accept.\n\n"
"False means \"not proven\", not \"invalid\": the caller then checks lead by lead.");

static PyMethodDef speedups_methods[] = {
    {"leads_are_valid", leads_are_valid, METH_O, leads_are_valid_doc},
    {"lead_columns", (PyCFunction)(void (*)(void))lead_columns, METH_FASTCALL, lead_columns_doc},
    {"rows_to_dicts", (PyCFunction)(void (*)(void))rows_to_dicts, METH_FASTCALL,
     rows_to_dicts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot speedups_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ryng_async._speedups",
    .m_doc = "The batched proof of a chunk of wire-form leads, in C (see _lead_checks).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
