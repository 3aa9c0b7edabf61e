/* The one intrusive doubly linked list of the library. An item embeds a struct afs_list_node
 * and is on at most one list through it; AFS_LIST_ITEM() gets the item back from its node.
 * A zero-initialised struct afs_list is empty, so lists can live in structs that users
 * initialise with {0}. Every operation is O(1); nothing allocates. */
#ifndef AFS_LIST_H
#define AFS_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct afs_list_node {
    struct afs_list_node *next, *prev;
};

struct afs_list {
    struct afs_list_node *first, *last;
};

/* The item of type `type` whose member `member` is at `ptr`. */
#define AFS_LIST_ITEM(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Iterates over l's nodes, first to last; `n` may be removed inside the loop (`tmp` holds
 * the next one). */
#define AFS_LIST_FOREACH_SAFE(n, tmp, l) \
    for ((n) = (l)->first; (n) && ((tmp) = (n)->next, 1); (n) = (tmp))

static inline bool afs_list_empty(const struct afs_list *l)
{
    return l->first == NULL;
}

static inline void afs_list_push_back(struct afs_list *l, struct afs_list_node *n)
{
    n->next = NULL;
    n->prev = l->last;
    if (l->last)
        l->last->next = n;
    else
        l->first = n;
    l->last = n;
}

static inline void afs_list_push_front(struct afs_list *l, struct afs_list_node *n)
{
    n->prev = NULL;
    n->next = l->first;
    if (l->first)
        l->first->prev = n;
    else
        l->last = n;
    l->first = n;
}

/* n must be on l. */
static inline void afs_list_remove(struct afs_list *l, struct afs_list_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->last = n->prev;
    n->next = n->prev = NULL;
}

/* Removes and returns l's first node, or NULL when l is empty. */
static inline struct afs_list_node *afs_list_pop_front(struct afs_list *l)
{
    struct afs_list_node *n = l->first;
    if (n)
        afs_list_remove(l, n);
    return n;
}

/* Moves every node of src to the end of dst (front: to the start), in order; src is
 * empty afterwards. */
static inline void afs_list_splice(struct afs_list *dst, struct afs_list *src, bool front)
{
    if (!src->first)
        return;
    struct afs_list *a = front ? src : dst, *b = front ? dst : src;
    if (a->last && b->first) {
        a->last->next = b->first;
        b->first->prev = a->last;
        dst->first = a->first;
        dst->last = b->last;
    } else if (!dst->first) {
        *dst = *src;
    }
    src->first = src->last = NULL;
}

#endif
